"""The core agreement tests on CUDA (`pytest -m gpu`; skipped without CUDA, never run in CI):
generation batched vs batch 1 and vs the CPU, sampling vs transformers' logits warpers, teacher
forcing vs the per-position reference, cross-scoring vs dense KL; bf16 weights with fp32 metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from tokenscope.model.anatomy import Unembedding

from helpers.devices import DEVICE, GPU_TEST, ON_CUDA
from helpers.prompts import make_prompts
from helpers.reference import assert_matches_reference, per_position_reference
from helpers.tiny_models import ARCHS

pytestmark = GPU_TEST

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def generate_all(model, tokenizer, batch_size: int, sampling: dict = SAMPLING, max_new_tokens: int = 16):
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    requests = generation_requests(tokenizer, make_prompts(), n_samples=3, seed=5)
    params = SamplingParams(max_new_tokens=max_new_tokens, **sampling)
    ends = tuple(range(0, len(tokenizer), 25))  # rows finish at different steps, queued prompts join
    return generate(
        model, tokenizer, requests, params, DecodeOptions(batch_size=batch_size, eos_ids=ends, show_progress=False)
    )


@pytest.mark.parametrize("arch", [*ARCHS, "qwen2-sliding"])
def test_generation_batched_equals_batch_one_and_the_cpu(device_loaded, tiny_loaded, arch):
    model, tokenizer = device_loaded(arch, "float32")
    assert next(model.parameters()).device.type == torch.device(DEVICE).type
    batched = generate_all(model, tokenizer, batch_size=5)
    single = generate_all(model, tokenizer, batch_size=1)
    on_cpu = generate_all(*tiny_loaded(arch), batch_size=5)
    cpu_model, cpu_tokenizer = tiny_loaded(arch)
    assert len({len(g.token_ids) for g in batched}) > 2  # rows really left at different steps
    for b, s, c in zip(batched, single, on_cpu, strict=True):
        assert b.token_ids.tolist() == s.token_ids.tolist() == c.token_ids.tolist()
        for name in ("entropy", "logprob", "topk_logprobs"):
            np.testing.assert_allclose(getattr(b, name), getattr(s, name), atol=5e-5, rtol=0, err_msg=name)
            np.testing.assert_allclose(getattr(b, name), getattr(c, name), atol=1e-4, rtol=0, err_msg=name)
        ids = list(b.request.prompt_ids) + b.token_ids.tolist()
        expected = pd.DataFrame(per_position_reference(cpu_model, cpu_tokenizer, ids, len(b.request.prompt_ids)))
        np.testing.assert_allclose(b.entropy, expected["entropy"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(b.logprob), expected["probability_of_next_token"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bf16_weights_give_fp32_metrics(device_loaded, arch, monkeypatch):
    """bf16 weights (runtime.dtype auto on CUDA): every metric is float32 and equals the float64
    computation from the bf16 hidden states the decode loop unembedded."""
    model, tokenizer = device_loaded(arch, "bfloat16")
    seen: list[torch.Tensor] = []
    unembed = Unembedding.forward

    def recording(self, hidden):
        seen.append(hidden.detach().clone())
        return unembed(self, hidden)

    monkeypatch.setattr(Unembedding, "forward", recording)
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=20, top_p=0.95)
    weight = model.get_output_embeddings().weight.detach().double()
    for request in generation_requests(tokenizer, make_prompts(3), n_samples=1, seed=1):
        seen.clear()
        (generation,) = generate(
            model, tokenizer, [request], params, DecodeOptions(batch_size=1, eos_ids=(), show_progress=False)
        )
        for field in dataclasses.fields(generation):
            value = getattr(generation, field.name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert value.dtype == np.float32, field.name
        hidden = torch.cat(seen)
        assert hidden.dtype == torch.bfloat16
        logp = torch.log_softmax(hidden.double() @ weight.T, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).cpu().numpy()
        tokens = torch.from_numpy(generation.token_ids).to(logp.device)
        np.testing.assert_allclose(generation.entropy, entropy, atol=5e-5, rtol=0)
        np.testing.assert_allclose(generation.logprob, logp.gather(1, tokens.view(-1, 1)).squeeze(1).cpu(), atol=5e-5)


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
        {"temperature": 0.7, "top_k": 0, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.999},
        {"temperature": 1.3, "top_k": 0, "top_p": 1.0},
    ],
)
def test_sampling_matches_transformers_warpers_and_the_cpu(sampling):
    """The tokens sampling can draw on the device are those transformers' warpers leave there, and
    the draws are the CPU's (seeded by hashes, not by a device generator)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from tokenscope.generation.sampling import SamplingParams, sample_tokens, sampled_support

    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.5, 1, 2, 3, 4, 1, 2, 3]).repeat(2).unsqueeze(-1)
    offsets = torch.tensor([0, 10, 25, 40, 70, -5, 60, 100]).repeat(2).unsqueeze(-1)
    logits = (torch.randn(16, 3000, generator=generator) * scales + offsets).float()
    params = SamplingParams(do_sample=True, **sampling)
    on_device = logits.to(DEVICE)
    scores = TemperatureLogitsWarper(params.temperature)(None, on_device.clone())
    if params.top_k:
        scores = TopKLogitsWarper(params.top_k)(None, scores)
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    support = sampled_support(on_device, params)
    assert torch.equal(support.cpu(), torch.isfinite(scores).cpu())
    seeds = torch.arange(16) * 7919 + 1
    drawn = sample_tokens(on_device, params, seeds.to(DEVICE), 3)
    assert support.gather(-1, drawn.unsqueeze(-1)).all()
    assert drawn.cpu().tolist() == sample_tokens(logits, params, seeds, 3).tolist()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_teacher_forcing_matches_the_reference(device_loaded, tiny_loaded, arch, batch_size):
    from tokenscope.inputs.sequences import reference_sequences
    from tokenscope.scoring.options import ScoringOptions
    from tokenscope.scoring.teacher_forcing import run_teacher_forcing

    model, tokenizer = device_loaded(arch, "float32")
    prompts = make_prompts()
    options = ScoringOptions(score_span="all", batch_size=batch_size, chunk_rows=5)
    frame = run_teacher_forcing(
        model, tokenizer, prompts, model_name=arch, prompt_set="t", options=options, show_progress=False
    ).to_pandas()
    sequences = {
        (s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start)
        for s in reference_sequences(tokenizer, prompts, "all")
    }
    assert_matches_reference(*tiny_loaded(arch), frame, sequences)  # the reference runs on the CPU


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cross_scoring_matches_dense_kl(device_loaded, tmp_path, dtype):
    """KL, logprob and entropy of two models on the device against the definitions on whole
    float64 logits of the same models (same dtype), one unpadded sequence at a time."""
    from tokenscope.model.loading import LoadOptions, load_prepared
    from tokenscope.model.sources import ModelSpec, prepare_model
    from tokenscope.scoring.cross_scoring import pair_divergence
    from tokenscope.scoring.options import ScoringOptions

    from helpers.tiny_models import save_tiny_checkpoint

    model_a, tokenizer = device_loaded("llama", dtype)
    save_tiny_checkpoint(tmp_path / "b", "llama", seed=1)
    prepare_model(ModelSpec("b", "path", str(tmp_path / "b")), tmp_path / "prepared")
    model_b, _ = load_prepared(tmp_path / "prepared", LoadOptions(device=DEVICE, dtype=dtype))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, len(tokenizer), size=n).tolist() for n in (9, 23, 4, 17, 2, 30, 12)]
    starts = [3, 1, 4, 10, 1, 29, 6]
    got = pair_divergence(
        model_a, model_b, sequences, starts, ScoringOptions(batch_size=1, chunk_rows=5),
        pad_id=tokenizer.pad_token_id, show_progress=False,
    )  # fmt: skip
    expected: dict[str, list[float]] = {"kl_a_b": [], "kl_b_a": [], "logprob_a": [], "entropy_b": []}
    with torch.no_grad():
        for ids, start in zip(sequences, starts, strict=True):
            x = torch.tensor([ids], device=DEVICE)
            heads = []
            for model in (model_a, model_b):
                hidden = model.base_model(input_ids=x).last_hidden_state[0].double()
                heads.append(torch.log_softmax(hidden @ model.get_output_embeddings().weight.double().T, -1).cpu())
            a, b = heads
            for t in range(start, len(ids)):
                expected["kl_a_b"].append(float((a[t - 1].exp() * (a[t - 1] - b[t - 1])).sum()))
                expected["kl_b_a"].append(float((b[t - 1].exp() * (b[t - 1] - a[t - 1])).sum()))
                expected["logprob_a"].append(float(a[t - 1, ids[t]]))
                expected["entropy_b"].append(float(-(b[t - 1].exp() * b[t - 1]).sum()))
    for name, values in expected.items():
        got_values = getattr(got, name)
        assert got_values.dtype == torch.float32, name
        np.testing.assert_allclose(got_values.cpu().numpy(), values, atol=1e-4, rtol=1e-4, err_msg=name)
    assert got.kl_a_b.mean() > 0.01


@pytest.mark.skipif(not ON_CUDA, reason="SDPA's fused kernels are CUDA's")
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bf16_attention_runs_on_fused_kernels(device_loaded, arch):
    """With SDPA limited to its flash and memory-efficient kernels (which never materialize the
    attention weights), prefill, refills and decoding still run: nothing needs the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, tokenizer = device_loaded(arch, "bfloat16")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        generations = generate_all(model, tokenizer, batch_size=5)
    assert all(np.isfinite(g.entropy).all() for g in generations)
