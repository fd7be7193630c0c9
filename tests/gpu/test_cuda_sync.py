"""Host-device synchronisation of the decode loop on CUDA (`pytest -m gpu`), counted by
`torch.cuda.set_sync_debug_mode("warn")`, which warns at every operation that waits for the
device: at most one per decode step (the step's packed results), none in the model's decode
forward, and a few per refill (its prefill places the joining prompts' ids on the device). The CPU
version, which counts host reads, is tests/unit/generation/test_host_sync.py."""

from __future__ import annotations

import warnings
from collections import Counter
from unittest import mock

import pytest
import torch

from helpers.devices import GPU_TEST, ON_CUDA
from helpers.prompts import make_prompts

pytestmark = [*GPU_TEST, pytest.mark.skipif(not ON_CUDA, reason="sync debug mode is CUDA's")]

# Waits a prefill of the loop (a wave's first rows or joining rows) may add outside the model (ids,
# mask and index placed on the device, a mask check).
PER_PREFILL = 6


@pytest.mark.parametrize(
    "sampling",
    [
        dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.9),
        dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0),
        dict(do_sample=False),
    ],
    ids=["top-k-top-p", "plain", "greedy"],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_at_most_one_sync_per_decode_step(device_loaded, dtype, sampling):
    from tokenscope.generation.decode import DecodeOptions, _Decoder, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams
    from tokenscope.model.anatomy import backbone

    model, tokenizer = device_loaded("llama", dtype)
    prefill = _Decoder.prefill
    prefill_calls = [0]  # each followed by one sampled step; joins of kept prompts forward nothing

    def counted_prefill(self, indices):
        prefill_calls[0] += 1
        return prefill(self, indices)

    requests = generation_requests(tokenizer, make_prompts(6), n_samples=2, seed=3)
    params = SamplingParams(max_new_tokens=24, **sampling)
    ends = tuple(range(0, len(tokenizer), 40))
    generate(
        model, tokenizer, requests[:2], params, DecodeOptions(batch_size=2, eos_ids=ends, show_progress=False)
    )  # warm up
    torch.cuda.synchronize()
    phases = {"decode": 0, "prefill": 0}
    syncs = {"decode": 0, "prefill": 0, "loop": 0}
    state = {"phase": "loop", "mark": 0}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def settle() -> None:
            syncs[state["phase"]] += sum("synchronizing" in str(w.message) for w in caught[state["mark"] :])
            state["mark"] = len(caught)

        def before(module, args, kwargs):
            settle()
            ids = kwargs.get("input_ids", args[0] if args else None)
            state["phase"] = "decode" if ids.shape[1] == 1 else "prefill"
            phases[state["phase"]] += 1

        def after(module, args, kwargs, output):
            settle()
            state["phase"] = "loop"

        body = backbone(model)
        hooks = [
            body.register_forward_pre_hook(before, with_kwargs=True),
            body.register_forward_hook(after, with_kwargs=True),
        ]
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with mock.patch.object(_Decoder, "prefill", counted_prefill):
                generate(
                    model, tokenizer, requests, params, DecodeOptions(batch_size=4, eos_ids=ends, show_progress=False)
                )
        finally:
            torch.cuda.set_sync_debug_mode("default")
            for hook in hooks:
                hook.remove()
        settle()
    sites = Counter(
        f"{w.filename.split('/site-packages/')[-1]}:{w.lineno}" for w in caught if "synchronizing" in str(w.message)
    )
    report = f"forwards {phases}, loop prefills {prefill_calls[0]}, syncs {syncs}; where: {dict(sites)}"
    assert prefill_calls[0] >= 3 and phases["decode"] > 0, report
    assert syncs["decode"] == 0, report
    assert syncs["loop"] <= phases["decode"] + (1 + PER_PREFILL) * prefill_calls[0] + 2, report
    print(report)
