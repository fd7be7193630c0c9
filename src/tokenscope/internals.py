"""Model internals per token: attention shares, attention received, depth convergence, logit lens.

Layers and attention modules are found through transformers' output-recording API
(`_can_record_outputs`, the same specification `output_hidden_states` / `output_attentions`
use), so any causal LM that supports those works without architecture-specific module names.
Forward hooks reduce what they see at once (attention weights are never kept per layer), and
attention weights come from the eager implementation, switched on only for the passes that read
them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope.batching import length_sorted_batches, pad
from tokenscope.metrics import Unembedding, backbone

Reducer = Callable[[int, Tensor], None]  # (layer index, attention weights [B, heads, Tq, Tk])


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


def _recorder_specs(model: nn.Module, key: str) -> list[RecorderSpec]:
    """The model's `_can_record_outputs[key]` entries, normalized as transformers does."""
    flags = getattr(model.base_model, "_can_record_outputs", None) or getattr(model, "_can_record_outputs", None) or {}
    entries = flags.get(key)
    if entries is None:
        return []
    specs = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if isinstance(entry, (type, str)):
            specs.append(RecorderSpec(entry if isinstance(entry, type) else None, 0 if key == "hidden_states" else 1, None,
                                      entry if isinstance(entry, str) else None))
        else:  # transformers' OutputRecorder
            specs.append(RecorderSpec(entry.target_class, entry.index, entry.layer_name, entry.class_name))
    return specs


def _find_modules(model: nn.Module, key: str) -> tuple[list[nn.Module], int]:
    specs = _recorder_specs(model, key)
    modules, index = [], 0
    for name, module in model.base_model.named_modules():
        spec = next((s for s in specs if s.matches(name, module)), None)
        if spec is not None:
            modules.append(module)
            index = spec.index
    return modules, index


def _output(output: Any, index: int) -> Tensor:
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


def model_anatomy(model: nn.Module) -> Anatomy:
    """The model's Anatomy, found once per model object (every analysis of every prompt asks)."""
    if model not in _ANATOMIES:
        _ANATOMIES[model] = _find_anatomy(model)
    return _ANATOMIES[model]


def _find_anatomy(model: nn.Module) -> Anatomy:
    """Find layers, attention modules and the final norm, and check them against the model's output."""
    layers, layer_index = _find_modules(model, "hidden_states")
    if not layers:
        raise ValueError(f"{type(model).__name__} declares no decoder layers (_can_record_outputs['hidden_states'])")
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
        last_output.append(_output(output, layer_index))

    handles = [child.register_forward_hook(lambda m, a, o: calls.append(m)) for child in body.children()]
    handles.append(layers[-1].register_forward_hook(after_last_layer))
    try:
        with torch.no_grad():
            expected = body(input_ids=probe).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    anatomy = Anatomy(layers, layer_index, attentions, weights_index, [m for m in calls if m is not layers[-1]], Unembedding(model))
    with torch.no_grad():
        got = anatomy.normalize(last_output[-1])
    if not torch.allclose(got.float(), expected.float(), atol=1e-3 * max(1.0, expected.abs().max().item()), rtol=1e-3):
        raise ValueError(f"{type(model).__name__}: could not identify the final norm after the last layer")
    return anatomy


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
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
        raise ValueError("this model does not expose its self-attention modules (_can_record_outputs['attentions'])")
    handles = []
    for layer in layers:
        def hook(module: nn.Module, args: Any, output: Any, layer: int = layer) -> None:
            weights = _output(output, anatomy.attention_weights_index) if isinstance(output, (tuple, list)) else None
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
        raise ValueError(f"layers {list(layers)} out of range for a model with {n_layers} layers")
    return resolved


# --- attention to marker tokens -------------------------------------------------------------


def marker_mask(token_strings: Sequence[str], markers: Sequence[str]) -> np.ndarray:
    """Tokens whose text overlaps an occurrence of a marker string (a marker may span tokens)."""
    lengths = np.fromiter((len(s) for s in token_strings), dtype=np.int64, count=len(token_strings))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    text = "".join(token_strings)
    mask = np.zeros(len(token_strings), dtype=bool)
    for marker in markers:
        at = text.find(marker)
        while at >= 0:
            mask[(starts < at + len(marker)) & (ends > at)] = True
            at = text.find(marker, at + 1)
    return mask


@torch.no_grad()
def marker_attention(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    masks: Sequence[np.ndarray],
    query_starts: Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 4,
    pad_id: int = 0,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """Share of attention that each query position >= query_starts[i] gives to masked key positions.

    Averaged over heads and over the chosen layers; one float32 array per sequence, for query
    positions query_starts[i] .. len - 1. A generated token at position p was sampled from the
    query at p - 1, so for generation step t pass query_starts = prompt_length - 1.
    """
    anatomy = model_anatomy(model)
    chosen = resolve_layers(layers, anatomy.n_layers)
    device = next(model.parameters()).device
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(sequences)
    progress = tqdm(total=len(sequences), unit="seq", desc="marker attention", disable=not show_progress, mininterval=2.0)
    for rows in length_sorted_batches(lengths, batch_size):
        ids, attention_mask = pad([sequences[i] for i in rows], pad_id, "right", device)
        key_mask = torch.zeros(ids.shape, dtype=torch.float32, device=device)
        for j, i in enumerate(rows):
            key_mask[j, : lengths[i]] = torch.as_tensor(masks[i], dtype=torch.float32, device=device)
        total = torch.zeros(ids.shape, dtype=torch.float32, device=device)

        def reduce(layer: int, weights: Tensor, total: Tensor = total, key_mask: Tensor = key_mask) -> None:
            # [B, heads, Tq, Tk] x [B, Tk] -> share per query, mean over heads.
            total.add_(torch.einsum("bhqk,bk->bq", weights.float(), key_mask) / weights.shape[1])

        with eager_attention(model), attention_hooks(anatomy, chosen, reduce):
            backbone(model)(input_ids=ids, attention_mask=attention_mask)
        shares = (total / len(chosen)).cpu().numpy()
        for j, i in enumerate(rows):
            results[i] = shares[j, query_starts[i] : lengths[i]].astype(np.float32)
        progress.update(len(rows))
    progress.close()
    return results


# --- attention received per key position ----------------------------------------------------


@torch.no_grad()
def attention_received(model: nn.Module, ids: Sequence[int], heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each (layer, head): mean attention weight each key position k receives, averaged over
    the query positions that can attend to it (q >= k, causal). Returns [len(heads), T] float32."""
    anatomy = model_anatomy(model)
    n_heads = model.config.get_text_config().num_attention_heads
    for layer, head in heads:
        resolve_layers([layer], anatomy.n_layers)
        if not 0 <= head < n_heads:
            raise ValueError(f"head {head} out of range for a model with {n_heads} heads")
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([list(ids)], device=device)
    length = input_ids.shape[1]
    queries_per_key = torch.arange(length, 0, -1, device=device, dtype=torch.float32)  # T - k
    received: dict[tuple[int, int], Tensor] = {}

    def reduce(layer: int, weights: Tensor) -> None:
        for pair in heads:
            if pair[0] == layer:
                received[pair] = weights[0, pair[1]].float().sum(0) / queries_per_key

    with eager_attention(model), attention_hooks(anatomy, sorted({layer for layer, _ in heads}), reduce):
        backbone(model)(input_ids=input_ids)
    return torch.stack([received[pair] for pair in heads]).cpu().numpy().astype(np.float32)


# --- depth: hidden-state convergence and logit lens -----------------------------------------


@dataclass(frozen=True)
class RecurrentDepth:
    """A recurrent-depth model (e.g. Huginn): its latent state is the output of `module` at each
    call, and `steps_argument=steps` is passed to forward to set the number of iterations."""

    module: str
    steps_argument: str = "num_steps"
    steps: int = 32


@torch.no_grad()
def depth_states(model: nn.Module, ids: Sequence[int], recurrent: RecurrentDepth | None = None) -> Tensor:
    """Hidden states along depth, [S, T, H] float32 on the model's device.

    Layered models: S = L + 1, state 0 is the input of the first layer (embeddings), state l the
    residual stream after layer l (before the final norm). Recurrent-depth models: one state per
    call of `recurrent.module`, i.e. per iteration.
    """
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([list(ids)], device=device)
    states: list[Tensor] = []
    if recurrent is not None:
        modules = dict(model.named_modules())
        if recurrent.module not in modules:
            raise ValueError(f"recurrent.module {recurrent.module!r} is not a submodule of {type(model).__name__}")
        handle = modules[recurrent.module].register_forward_hook(lambda m, a, o: states.append(_output(o, 0)[0].float()))
        try:
            model(input_ids=input_ids, **{recurrent.steps_argument: recurrent.steps})
        finally:
            handle.remove()
        if not states:
            raise ValueError(f"recurrent.module {recurrent.module!r} was never called")
        return torch.stack(states)
    anatomy = model_anatomy(model)

    def first_input(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        states.append((args[0] if args else kwargs["hidden_states"])[0].float())

    handles = [anatomy.layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [
        layer.register_forward_hook(lambda m, a, o: states.append(_output(o, anatomy.layer_output_index)[0].float()))
        for layer in anatomy.layers
    ]
    try:
        backbone(model)(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(states)


def convergence_distances(states: Tensor) -> np.ndarray:
    """||x_s - x_final||_2 per depth step and position: [S, T] float32 (last row is 0)."""
    return torch.linalg.vector_norm(states - states[-1:], dim=-1).cpu().numpy().astype(np.float32)


@dataclass
class LogitLens:
    entropy: np.ndarray  # [S, T] float32, nats
    top_ids: np.ndarray  # [S, T] int64
    top_probs: np.ndarray  # [S, T] float32


@torch.no_grad()
def logit_lens(model: nn.Module, states: Tensor, chunk_rows: int = 512) -> LogitLens:
    """Final norm + unembedding applied to every depth state, in chunks of positions (fp32 logits)."""
    anatomy = model_anatomy(model)
    flat = states.reshape(-1, states.shape[-1])
    entropy, top_ids, top_probs = [], [], []
    dtype = next(model.parameters()).dtype
    for start in range(0, flat.shape[0], chunk_rows):
        logits = anatomy.unembed(anatomy.normalize(flat[start : start + chunk_rows].to(dtype)))
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        entropy.append(-torch.where(p > 0, p * logp, torch.zeros((), device=p.device)).sum(-1))
        best = logp.max(dim=-1)
        top_ids.append(best.indices)
        top_probs.append(best.values.exp())
    shape = states.shape[:2]
    return LogitLens(
        entropy=torch.cat(entropy).reshape(shape).cpu().numpy().astype(np.float32),
        top_ids=torch.cat(top_ids).reshape(shape).cpu().numpy(),
        top_probs=torch.cat(top_probs).reshape(shape).cpu().numpy().astype(np.float32),
    )
