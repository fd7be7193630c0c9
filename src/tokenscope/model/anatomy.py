"""Model anatomy: the parts of a causal LM that tokenscope computes with or hooks into.

The backbone (final hidden states), the unembedding (hidden states -> fp32 logits as the model's
head computes them), the decoder layers, their self-attention modules and the final norm. Layers
and attention modules are found through transformers' output-recording API
(`_can_record_outputs`, the same specification `output_hidden_states` / `output_attentions`
use), so any causal LM that supports those works without architecture-specific module names.
Attention weights come from the eager implementation, switched on only for the passes that
read them, and forward hooks reduce what they see at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tokenscope.errors import ConfigError, ModelError
from tokenscope.model.types import CausalLM

Reducer = Callable[[int, Tensor], None]  # (layer index, attention weights [B, heads, Tq, Tk])


class Unembedding(nn.Module):
    """Final hidden states -> fp32 logits, as the model's own head computes them.

    Uses the model's output embedding found through the transformers API (not module names of
    one architecture), and applies the logit scaling some architectures add after the head.
    With low-precision weights the product is done in fp32 so that metrics see fp32 logits.
    """

    def __init__(self, model: CausalLM) -> None:
        super().__init__()
        head = model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise ModelError(f"{type(model).__name__} exposes no output embedding (get_output_embeddings)")
        self.weight = head.weight
        self.bias = getattr(head, "bias", None)
        self.fp32_weight = self.weight if self.weight.dtype == torch.float32 else None
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.scale = getattr(config, "logit_scale", None)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.weight.dtype in (torch.float32, torch.float64):
            logits = nn.functional.linear(hidden.to(self.weight.dtype), self.weight, self.bias).float()
        else:
            if self.fp32_weight is None:
                self.fp32_weight = self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            logits = nn.functional.linear(hidden.float(), self.fp32_weight, bias)
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def backbone(model: CausalLM) -> nn.Module:
    """The model without its head: returns final (normalized) hidden states."""
    return model.base_model


def check_unembedding(model: CausalLM, unembed: Unembedding, vocab_size: int) -> None:
    """Fail loudly if backbone + Unembedding does not reproduce the model's own logits.

    Architectures that post-process logits in ways this class does not know would otherwise give
    silently wrong metrics.
    """
    device = next(model.parameters()).device
    probe = torch.arange(1, 9, device=device).clamp(max=vocab_size - 1).unsqueeze(0)
    with torch.no_grad():
        expected = model(input_ids=probe).logits.float()
        got = unembed(backbone(model)(input_ids=probe).last_hidden_state)
    tolerance = 1e-3 * max(1.0, expected.abs().max().item())
    if next(model.parameters()).dtype != torch.float32 and next(model.parameters()).dtype != torch.float64:
        tolerance *= 50  # the model's own low-precision head rounds its logits
    error = (expected - got).abs().max().item()
    if error > tolerance:
        raise ModelError(
            f"{type(model).__name__}: backbone + output embedding differ from the model's logits "
            f"by {error:.3g}; this architecture post-processes logits in an unsupported way"
        )


@dataclass(frozen=True)
class RecorderSpec:
    target: type[nn.Module] | None
    index: int
    layer_name: str | None
    class_name: str | None

    def matches(self, name: str, module: nn.Module) -> bool:
        hit = (self.target is not None and isinstance(module, self.target)) or (
            self.class_name is not None and name.endswith(self.class_name)
        )
        if hit and self.layer_name is not None:
            return f".{self.layer_name.strip('.')}." in f".{name}."
        return hit


def _recorder_specs(model: CausalLM, key: str) -> list[RecorderSpec]:
    """The model's `_can_record_outputs[key]` entries, normalized as transformers does."""
    flags = getattr(model.base_model, "_can_record_outputs", None) or getattr(model, "_can_record_outputs", None) or {}
    entries = flags.get(key)
    if entries is None:
        return []
    specs = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if isinstance(entry, (type, str)):
            specs.append(
                RecorderSpec(
                    entry if isinstance(entry, type) else None,
                    0 if key == "hidden_states" else 1,
                    None,
                    entry if isinstance(entry, str) else None,
                )
            )
        else:  # transformers' OutputRecorder
            specs.append(RecorderSpec(entry.target_class, entry.index, entry.layer_name, entry.class_name))
    return specs


def _find_modules(model: CausalLM, key: str) -> tuple[list[nn.Module], int]:
    specs = _recorder_specs(model, key)
    modules, index = [], 0
    for name, module in model.base_model.named_modules():
        spec = next((s for s in specs if s.matches(name, module)), None)
        if spec is not None:
            modules.append(module)
            index = spec.index
    return modules, index


def layer_output(output: Any, index: int) -> Tensor:
    return output[index] if isinstance(output, (tuple, list)) else output


@dataclass
class Anatomy:
    """The parts of a causal LM the internals analyses hook into."""

    layers: list[nn.Module]  # decoder layers, in order
    layer_output_index: int
    attentions: list[nn.Module]  # self-attention module of each layer, in order (may be empty)
    attention_weights_index: int
    final_norm: list[nn.Module]  # applied in order after the last layer (empty: none)
    unembed: Unembedding

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def normalize(self, hidden: Tensor) -> Tensor:
        for module in self.final_norm:
            hidden = module(hidden)
        return hidden


_ANATOMIES: weakref.WeakKeyDictionary[nn.Module, Anatomy] = weakref.WeakKeyDictionary()


def model_anatomy(model: CausalLM) -> Anatomy:
    """The model's Anatomy, found once per model object (every analysis of every prompt asks)."""
    if model not in _ANATOMIES:
        _ANATOMIES[model] = _find_anatomy(model)
    return _ANATOMIES[model]


def _find_anatomy(model: CausalLM) -> Anatomy:
    """Find layers, attention modules and the final norm, and check them against the model's output."""
    layers, layer_index = _find_modules(model, "hidden_states")
    if not layers:
        raise ModelError(f"{type(model).__name__} declares no decoder layers (_can_record_outputs['hidden_states'])")
    attentions, weights_index = _find_modules(model, "attentions")
    if attentions and len(attentions) != len(layers):
        attentions = []  # e.g. cross-attention mixed in: attention analyses are then refused
    body = backbone(model)
    device = next(model.parameters()).device
    probe = torch.arange(1, 9, device=device).clamp(max=model.config.get_text_config().vocab_size - 1)[None]
    # The final norm: direct children of the backbone that run after the last layer returns.
    calls: list[nn.Module] = []
    last_output: list[Tensor] = []

    def after_last_layer(module: nn.Module, args: Any, output: Any) -> None:
        calls.clear()
        last_output.append(layer_output(output, layer_index))

    handles = [child.register_forward_hook(lambda m, a, o: calls.append(m)) for child in body.children()]
    handles.append(layers[-1].register_forward_hook(after_last_layer))
    try:
        # The probe must not move the random state (finetuning asks for the anatomy mid-setup).
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            expected = body(input_ids=probe).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    anatomy = Anatomy(
        layers, layer_index, attentions, weights_index, [m for m in calls if m is not layers[-1]], Unembedding(model)
    )
    with torch.no_grad():
        got = anatomy.normalize(last_output[-1])
    if not torch.allclose(got.float(), expected.float(), atol=1e-3 * max(1.0, expected.abs().max().item()), rtol=1e-3):
        raise ModelError(f"{type(model).__name__}: could not identify the final norm after the last layer")
    return anatomy


@contextmanager
def eager_attention(model: CausalLM) -> Iterator[None]:
    """Attention weights exist only in the eager implementation: switch to it for one pass."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


@contextmanager
def attention_hooks(anatomy: Anatomy, layers: Sequence[int], reduce: Reducer) -> Iterator[None]:
    """Call `reduce(layer, weights)` with each chosen layer's attention weights as they are computed."""
    if not anatomy.attentions:
        raise ModelError("this model does not expose its self-attention modules (_can_record_outputs['attentions'])")
    handles = []
    for layer in layers:

        def hook(module: nn.Module, args: Any, output: Any, layer: int = layer) -> None:
            weights = (
                layer_output(output, anatomy.attention_weights_index) if isinstance(output, (tuple, list)) else None
            )
            if weights is None:
                raise RuntimeError("attention weights not returned; the eager implementation is required")
            reduce(layer, weights)

        handles.append(anatomy.attentions[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def resolve_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Config layers (None = all; negative counts from the end) -> sorted valid indices."""
    if layers is None:
        return list(range(n_layers))
    resolved = sorted({layer % n_layers if -n_layers <= layer < n_layers else -1 for layer in layers})
    if -1 in resolved:
        raise ConfigError(f"layers {list(layers)} out of range for a model with {n_layers} layers")
    return resolved
