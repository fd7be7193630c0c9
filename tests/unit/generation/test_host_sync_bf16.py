"""GPU readiness on the CPU: bf16 weights (what `runtime.dtype: auto` gives on CUDA) with fp32
logits for every metric. A tiny model in bfloat16 generates, teacher-forces and cross-scores; every
metric comes back as float32 and equals, within fp32 rounding, a float64 computation from the same
bf16 hidden states and the same (upcast) unembedding, while logits rounded to bf16 would be off by
far more."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tokenscope.model.anatomy import Unembedding, backbone

from helpers.prompts import make_prompts

SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 0.95}


def dense_float64(hidden: torch.Tensor, model) -> torch.Tensor:
    """Log-probabilities in float64 from bf16 hidden states and the model's bf16 output embedding."""
    weight = model.get_output_embeddings().weight.detach()
    return torch.log_softmax(hidden.detach().double() @ weight.double().T, dim=-1)


def moments(logp: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    varentropy = (p * (logp + entropy.unsqueeze(-1)) ** 2).sum(-1)
    return entropy.numpy(), varentropy.numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_generation_metrics_are_fp32_from_bf16_hidden_states(tiny_loaded, arch, monkeypatch):
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    model, tokenizer = tiny_loaded(arch, "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    unembed = Unembedding.forward

    def recording(self, hidden):
        logits = unembed(self, hidden)
        seen.append((hidden.detach().clone(), logits.detach().clone()))
        return logits

    monkeypatch.setattr(Unembedding, "forward", recording)
    params = SamplingParams(max_new_tokens=12, **SAMPLING)
    requests = generation_requests(tokenizer, make_prompts(3), n_samples=1, seed=1)
    checked = 0
    for request in requests:  # one at a time: the recorded hidden states are this sequence's steps
        seen.clear()
        (generation,) = generate(
            model, tokenizer, [request], params, DecodeOptions(batch_size=1, eos_ids=(), show_progress=False)
        )
        assert len(seen) == len(generation.token_ids) == 12
        hidden = torch.cat([h for h, _ in seen])
        assert hidden.dtype == torch.bfloat16 and all(logits.dtype == torch.float32 for _, logits in seen)
        for field in dataclasses.fields(generation):
            value = getattr(generation, field.name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert value.dtype == np.float32, field.name
        logp = dense_float64(hidden, model)
        tokens = torch.from_numpy(generation.token_ids)
        entropy, varentropy = moments(logp)
        np.testing.assert_allclose(generation.entropy, entropy, atol=2e-5, rtol=0)
        np.testing.assert_allclose(generation.varentropy, varentropy, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(generation.logprob, logp.gather(1, tokens.view(-1, 1)).squeeze(1), atol=2e-5)
        top = logp.topk(generation.topk_logprobs.shape[1], dim=-1)
        np.testing.assert_allclose(generation.topk_logprobs, top.values.numpy(), atol=2e-5)
        np.testing.assert_allclose(generation.margin, (top.values[:, 0] - top.values[:, 1]).numpy(), atol=2e-5)
        # Logits rounded to bf16 (a bf16 head) would be off by orders of magnitude more.
        rounded = torch.log_softmax((hidden @ model.get_output_embeddings().weight.detach().T).double(), dim=-1)
        assert np.abs(moments(rounded)[0] - entropy).max() > 50 * np.abs(generation.entropy - entropy).max()
        checked += len(tokens)
    assert checked == 36


def test_teacher_forcing_and_cross_scoring_are_fp32_from_bf16(tiny_loaded):
    """Both scoring paths on a bf16 model give float32 metrics equal to the float64 computation
    from the model's own bf16 hidden states (one unpadded sequence at a time, as they are computed)."""
    from tokenscope.inputs.sequences import reference_sequences
    from tokenscope.scoring.cross_scoring import pair_divergence
    from tokenscope.scoring.options import ScoringOptions
    from tokenscope.scoring.teacher_forcing import run_teacher_forcing

    model, tokenizer = tiny_loaded("llama", "bfloat16")
    other, _ = tiny_loaded("llama", "float32")  # the same weights in fp32: another model to compare with
    prompts = make_prompts(3)
    options = ScoringOptions(score_span="answer", batch_size=1)
    table = run_teacher_forcing(
        model, tokenizer, prompts, model_name="m", prompt_set="t", options=options, show_progress=False
    )
    for name in ("entropy", "logprob", "prob", "varentropy", "margin"):
        if name in table.column_names:
            assert str(table.schema.field(name).type) == "float", name
    frame = table.to_pandas()
    sequences = reference_sequences(tokenizer, prompts, "answer")
    expected_entropy, expected_logprob, kl = [], [], []
    with torch.no_grad():
        for sequence in sequences:
            ids = torch.tensor([sequence.token_ids.tolist()])
            hidden = backbone(model)(input_ids=ids).last_hidden_state[0]
            logp = dense_float64(hidden, model)[sequence.score_start - 1 : -1]
            targets = ids[0, sequence.score_start :]
            expected_entropy.append(moments(logp)[0])
            expected_logprob.append(logp.gather(1, targets.view(-1, 1)).squeeze(1).numpy())
            logp_other = torch.log_softmax(other(input_ids=ids).logits[0].double(), -1)[sequence.score_start - 1 : -1]
            kl.append((logp.exp() * (logp - logp_other)).sum(-1).numpy())
    frame = frame.sort_values(["prompt_id", "step"])
    np.testing.assert_allclose(frame["entropy"], np.concatenate(expected_entropy), atol=2e-5, rtol=0)
    np.testing.assert_allclose(frame["logprob"], np.concatenate(expected_logprob), atol=2e-5, rtol=0)
    pairs = pair_divergence(
        model,
        other,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        ScoringOptions(batch_size=1, chunk_rows=7),
        pad_id=tokenizer.pad_token_id,
        show_progress=False,
    )
    for field in dataclasses.fields(pairs):
        assert getattr(pairs, field.name).dtype == torch.float32, field.name
    np.testing.assert_allclose(pairs.kl_a_b.numpy(), np.concatenate(kl), atol=2e-5, rtol=1e-4)
    assert pairs.kl_a_b.mean() > 1e-4  # bf16 and fp32 weights of one model really differ a little
