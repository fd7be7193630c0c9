"""GPU readiness of the decode loop on the CPU: it reads the device at most once per decode step.

A TorchFunctionMode watches every torch call made while `generate` runs and counts the host reads of
device tensors (what waits for a GPU): `.item()`, `.tolist()`, `.numpy()`, `bool()`, `int()`,
`float()`, `.cpu()` (a `.to()` towards the host is counted where its result is read: on this CPU
test `.to(device)` and `.to("cpu")` look alike), comparisons that return Python booleans, and the
ops whose output size depends on the values (`nonzero`, boolean-mask indexing, `unique`, ...). A
tensor counts as on the host when it was made from host data without a device, or came back from
the device through a counted read; everything else (parameters, activations, tensors placed with
`device=` or `.to(device)`) counts as on the device, as it would be on a GPU. Host-to-device copies
are not counted here: on CUDA they go through pinned memory without waiting
(`_Decoder.to_device`), and the `gpu` test (tests/gpu/test_cuda_sync.py) checks the real thing
with `torch.cuda.set_sync_debug_mode`.

What the decode loop needs (tokenscope.generation.decode): one read per `_Decoder.step` (its
packed results: token, metrics, end flag), which happens once per decode forward, once after the
first prefill of a wave and once after each refill's prefill; nothing per token. The model's own
decode forward must read nothing.
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from helpers.prompts import make_prompts

# Reads of a tensor's values into Python: each one waits for the device.
READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__complex__", "__array__"}
# Ops whose result (a Python value, or a tensor whose size depends on the values) needs the values.
VALUE_DEPENDENT = {
    "equal",
    "allclose",
    "is_nonzero",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
    "masked_scatter",
}
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}
FACTORIES = {"tensor", "as_tensor", "from_numpy", "full", "zeros", "ones", "empty", "arange", "asarray"}


@dataclass
class HostReads(TorchFunctionMode):
    """Counts host reads of device tensors, by phase (`decode` forward, `prefill` forward, `loop`)."""

    phase: str = "loop"
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (phase, op, call site)
    _host: dict[int, weakref.ref] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def is_host(self, tensor: torch.Tensor) -> bool:
        ref = self._host.get(id(tensor))
        return ref is not None and ref() is tensor

    def mark(self, tensor: Any, host: bool) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        if host:
            self._host[id(tensor)] = weakref.ref(tensor)
        else:
            self._host.pop(id(tensor), None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if not self.is_host(t)]
        subject = args[0] if args and isinstance(args[0], torch.Tensor) else None
        subject_on_device = subject is not None and not self.is_host(subject)
        transfer = placement = False
        if name in READS and subject_on_device:
            self.record(name)
        elif name == "cpu" and subject_on_device:
            self.record(name)
            transfer = True
        elif name == "to" and subject is not None and not subject_on_device:
            # Host -> device (the test's device is the CPU, so `.to(device)` and `.to("cpu")` look
            # alike: a `.to` is never counted, the read of its result is).
            placement = _target_device(args[1:], kwargs) is not None
        elif name in VALUE_DEPENDENT and on_device:
            self.record(name)
        elif name == "where" and len(args) + len(kwargs) == 1 and on_device:
            self.record("where(condition)")
        elif name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor) and on_device:
            if "output_size" not in kwargs:
                self.record(name)
        elif name in INDEXING and on_device and _has_bool_index(args[1:2]):
            self.record(f"{name}[bool mask]")
        result = func(*args, **kwargs)
        if (transfer or placement) and result is subject:
            # On the CPU a transfer returns the tensor itself; on a GPU it is another tensor.
            result = result.view_as(result)
        if transfer or (
            not placement and ((name in FACTORIES and kwargs.get("device") is None) or (tensors and not on_device))
        ):
            self.mark(result, host=True)
        return result

    def record(self, op: str) -> None:
        site = next(
            (
                f"{frame.filename.split('/site-packages/')[-1].split('/src/')[-1]}:{frame.lineno} {frame.name}"
                for frame in reversed(traceback.extract_stack()[:-2])
                if "torch/" not in frame.filename and "test_host_sync" not in frame.filename
            ),
            "?",
        )
        self.events.append((self.phase, op, site))

    def summary(self) -> str:
        return "\n".join(f"{n} x {phase} {op} at {site}" for (phase, op, site), n in Counter(self.events).items())


def _target_device(args: tuple, kwargs: dict) -> torch.device | None:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
        if isinstance(value, torch.Tensor):
            return value.device
    return None


def _has_bool_index(index: tuple) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in tree_flatten(index)[0])


@dataclass
class Forwards:
    """Counts the backbone's forward passes: decode (one new token per row) and prefill; and the
    decode loop's prefills (a wave's first rows, or rows joining: each followed by one sampled
    step), which forward only prompts not kept from an earlier prefill."""

    decode: int = 0
    prefill: int = 0
    prefill_calls: int = 0


def watch_forwards(model, reads: HostReads) -> tuple[Forwards, list]:
    from tokenscope.model.anatomy import backbone

    counts = Forwards()

    def before(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[1] == 1:
            counts.decode += 1
            reads.phase = "decode"
        else:
            counts.prefill += 1
            reads.phase = "prefill"

    def after(module, args, kwargs, output):
        reads.phase = "loop"

    body = backbone(model)
    return counts, [
        body.register_forward_pre_hook(before, with_kwargs=True),
        body.register_forward_hook(after, with_kwargs=True),
    ]


def test_the_counter_sees_host_reads():
    """The counter itself: device reads count once (a .cpu().numpy() chain once), host data not."""
    reads = HostReads()
    device = torch.ones(4, device="cpu") * 2  # an activation: on the device
    with reads:
        host = torch.zeros(3)  # made on the host
        device.sum().item()
        device.cpu().numpy()
        bool(device.max() > 1)
        device[device > 1]
        device.nonzero()
        placed = host.to(device.device)  # host -> device
        placed.tolist()
        host.tolist()
        host.numpy()
        int(host[0])
    assert [op for _, op, _ in reads.events] == [
        "item",
        "cpu",
        "__bool__",
        "__getitem__[bool mask]",
        "nonzero",
        "tolist",
    ]


def large_vocabulary_model(tiny_loaded, vocab: int = 4096):
    """The tiny Llama with its vocabulary widened to `vocab` random rows (the tokenizer's ids unchanged)."""
    from transformers import AutoModelForCausalLM

    small, tokenizer = tiny_loaded("llama")
    config = small.config.__class__(**{**small.config.to_dict(), "vocab_size": vocab})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


SAMPLINGS = {
    "top-k-top-p": dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.9),
    "top-p": dict(do_sample=True, temperature=1.0, top_k=0, top_p=0.8),
    "plain": dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0),
    "greedy": dict(do_sample=False),
}
# A vocabulary over 1,024 makes top-p without top-k work on candidates (sampling._filter).
CASES = [
    ("llama", "top-k-top-p"),
    ("llama", "plain"),
    ("llama", "greedy"),
    ("qwen2", "top-k-top-p"),
    ("llama-vocab-4096", "top-p"),
    ("llama-vocab-4096", "top-k-top-p"),
]
_traced: dict[tuple[str, str], tuple[Forwards, HostReads, int]] = {}


def traced_generation(tiny_loaded, arch: str, sampling: str) -> tuple[Forwards, HostReads, str]:
    """Batch 4 over 12 sequences with frequent end tokens (rows leave and queued prompts join),
    watched by HostReads (once per case: the tests below read the same run)."""
    from tokenscope.generation.decode import DecodeOptions, _Decoder, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    if (arch, sampling) not in _traced:
        if arch == "llama-vocab-4096":
            model, tokenizer = large_vocabulary_model(tiny_loaded)
        else:
            model, tokenizer = tiny_loaded(arch)
        requests = generation_requests(tokenizer, make_prompts(6), n_samples=2, seed=3)
        params = SamplingParams(max_new_tokens=24, **SAMPLINGS[sampling])
        ends = tuple(range(0, len(tokenizer), 40))
        reads = HostReads()
        counts, hooks = watch_forwards(model, reads)
        prefill = _Decoder.prefill

        def counted_prefill(self, indices):
            counts.prefill_calls += 1
            return prefill(self, indices)

        try:
            # As on a GPU: top-p without top-k sorts the vocabulary instead of testing on the host
            # whether the candidates hold every nucleus (the CPU-only shortcut, sampling._candidates_first).
            with (
                reads,
                mock.patch("tokenscope.generation.sampling._candidates_first", lambda device: False),
                mock.patch.object(_Decoder, "prefill", counted_prefill),
            ):
                generations = generate(
                    model, tokenizer, requests, params, DecodeOptions(batch_size=4, eos_ids=ends, show_progress=False)
                )
        finally:
            for hook in hooks:
                hook.remove()
        _traced[(arch, sampling)] = (counts, reads, sum(len(g.token_ids) for g in generations))
    counts, reads, tokens = _traced[(arch, sampling)]
    assert counts.prefill_calls >= 3  # queued prompts really joined
    assert tokens > 2 * counts.decode  # batched: several tokens per decode step
    by_phase = Counter(phase for phase, _, _ in reads.events)
    return counts, reads, f"{counts}, host reads by phase {dict(by_phase)}:\n{reads.summary()}"


@pytest.mark.parametrize(("arch", "sampling"), CASES)
def test_the_loop_reads_the_device_once_per_step(tiny_loaded, arch, sampling):
    """Outside the model's forward passes: one read per sampled step (each decode forward and each
    prefill of the loop is followed by one), nothing per token."""
    counts, reads, report = traced_generation(tiny_loaded, arch, sampling)
    loop = sum(phase == "loop" for phase, _, _ in reads.events)
    assert loop <= counts.decode + counts.prefill_calls, report


@pytest.mark.parametrize(("arch", "sampling"), CASES)
def test_the_decode_forward_reads_nothing(tiny_loaded, arch, sampling):
    """The model's own decode forward reads nothing from the device (prefills may: they run once
    per refill, not per token)."""
    _, reads, report = traced_generation(tiny_loaded, arch, sampling)
    assert not [event for event in reads.events if event[0] == "decode"], report


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_generation_attention_never_takes_the_eager_path(tiny_loaded, arch, monkeypatch):
    """Models load with a fused attention (LoadOptions' default, SDPA: flash or memory-efficient
    kernels on CUDA), and neither prefill nor decoding falls back to eager attention, which
    materializes the weights; only the internals passes that read attention weights switch to it."""
    import importlib

    from transformers import AttentionInterface

    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    model, tokenizer = tiny_loaded(arch)
    implementation = model.config._attn_implementation
    assert implementation != "eager" and implementation in AttentionInterface._global_mapping
    modeling = importlib.import_module(f"transformers.models.{arch}.modeling_{arch}")
    eager_calls = []
    eager = modeling.eager_attention_forward

    def counting(*args, **kwargs):
        eager_calls.append(1)
        return eager(*args, **kwargs)

    monkeypatch.setattr(modeling, "eager_attention_forward", counting)
    fused = Counter()

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            fused[getattr(func, "__name__", "")] += 1
            return func(*args, **(kwargs or {}))

    requests = generation_requests(tokenizer, make_prompts(4), n_samples=1, seed=3)
    with Watch():
        generate(
            model,
            tokenizer,
            requests,
            SamplingParams(max_new_tokens=6),
            DecodeOptions(batch_size=2, show_progress=False),
        )
    assert not eager_calls
    if implementation == "sdpa":
        assert fused["scaled_dot_product_attention"] >= model.config.num_hidden_layers * 6
