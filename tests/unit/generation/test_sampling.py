"""Sampling's top-k/top-p support (generation.sampling): the tokens it can draw are the ones
transformers' logits warpers leave, also at the nucleus boundary. The sampling entropy
(sample_with_entropy): the entropy of the distribution a token is drawn from equals that of
transformers' warpers (temperature, top-k, top-p, then a float64 softmax of what they leave), also
at the nucleus boundary and on the full-sort path; greedy is 0; the tokens drawn are sample_tokens'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenscope.generation.sampling import (
    SamplingParams,
    sample_tokens,
    sample_with_entropy,
    sample_with_metrics,
    sampled_support,
    tempered_entropy,
)

from helpers.reference import warped_entropy


def transformers_support(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The tokens transformers' warpers (temperature, top-k, top-p, in generate's order) leave finite."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    scores = TemperatureLogitsWarper(params.temperature)(None, logits.clone())
    if params.top_k:
        scores = TopKLogitsWarper(params.top_k)(None, scores)
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    return torch.isfinite(scores)


def boundary_case(vocab: int, step: float, offset: float, top_k: int) -> tuple[torch.Tensor, float, int]:
    """(logits [1, vocab], top_p, token) where the exact mass of the tokens more likely than `token`
    is top_p - 1e-6: logit_i = offset - i * step (exact in fp32), shuffled; exact probabilities in
    float64 from those fp32 logits (renormalized over the top_k most likely with top-k)."""
    base = -torch.arange(vocab, dtype=torch.float64) * step
    probs = torch.softmax(base[: top_k or vocab], -1)
    mass_before = probs.cumsum(-1) - probs
    boundary = int((mass_before < 0.95).sum())  # the first token whose mass before it reaches 0.95
    top_p = float(mass_before[boundary]) + 1e-6
    assert probs[boundary] > 2e-5  # so the next token is well outside the nucleus
    order = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))
    logits = (base + offset).float()
    assert torch.equal(logits.double() - offset, base)  # exact: the float64 masses are the fp32 logits' own
    return logits[order].unsqueeze(0), top_p, int(torch.argsort(order)[boundary])


@pytest.mark.parametrize(
    ("vocab", "step", "offset", "top_k"),
    [
        # Logits around 60 (common for LLMs, more so after temperature < 1): an fp32 logsumexp
        # rounded at that scale made every probability 3e-6 too large, and this token was dropped.
        (4096, 1 / 256, 64.0, 0),
        (4096, 1 / 256, 0.0, 0),
        # The nucleus is not inside the 1024 top candidates: the full-sort path.
        (4096, 1 / 1024, 64.0, 0),
        # top-k first (renormalized), then top-p.
        (4096, 1 / 256, 64.0, 2000),
    ],
)
def test_token_just_inside_the_nucleus_is_kept(vocab, step, offset, top_k):
    logits, top_p, token = boundary_case(vocab, step, offset, top_k)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p)
    support = sampled_support(logits, params)
    assert support[0, token], "the token whose mass before it is top_p - 1e-6 can be sampled"
    expected = transformers_support(logits, params)
    assert expected[0, token]
    assert torch.equal(support, expected)


def random_rows() -> torch.Tensor:
    """16 rows of 3,000 logits at different scales and offsets (up to 100, as in large models)."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.5, 1, 2, 3, 4, 1, 2, 3]).repeat(2).unsqueeze(-1)
    offsets = torch.tensor([0, 10, 25, 40, 70, -5, 60, 100]).repeat(2).unsqueeze(-1)
    return (torch.randn(16, 3000, generator=generator) * scales + offsets).float()


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
        {"temperature": 0.7, "top_k": 0, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.5},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.999},
        {"temperature": 1.3, "top_k": 20, "top_p": 1.0},
        {"temperature": 1.3, "top_k": 0, "top_p": 1.0},
    ],
)
def test_support_matches_transformers_warpers(sampling):
    logits = random_rows()
    params = SamplingParams(do_sample=True, **sampling)
    support = sampled_support(logits, params)
    assert torch.equal(support, transformers_support(logits, params))
    drawn = sample_tokens(logits, params, torch.arange(16) * 7919 + 1, 3)
    assert support.gather(-1, drawn.unsqueeze(-1)).all()


def test_rows_away_from_the_boundary_draw_the_same_tokens():
    """The float64 nucleus changes only which tokens sit at the boundary, never the draw of a row
    away from it: these are the tokens the fp32 version drew."""
    logits = random_rows()
    seeds = torch.arange(16) * 7919 + 1
    params = SamplingParams(do_sample=True, temperature=0.7, top_k=0, top_p=0.9)
    drawn = sample_tokens(logits, params, seeds, 0).tolist()
    assert drawn == [1767, 573, 652, 1928, 2865, 470, 289, 770, 1958, 2966, 2437, 1958, 885, 2603, 459, 2288]
    params = SamplingParams(do_sample=True, temperature=0.7, top_k=50, top_p=0.9)
    drawn = sample_tokens(logits, params, seeds, 5).tolist()
    assert drawn == [620, 822, 724, 656, 2865, 1610, 2645, 770, 2093, 642, 1064, 589, 885, 550, 2559, 2984]


# --- The sampling entropy ---------------------------------------------------------------------------

SEEDS = torch.arange(16) * 7919 + 1


def transformers_entropies(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    settings = {"do_sample": params.do_sample, "temperature": params.temperature, "top_k": params.top_k}
    settings["top_p"] = params.top_p
    return torch.tensor([warped_entropy(row, settings) for row in logits], dtype=torch.float64)


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
        {"temperature": 0.7, "top_k": 0, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.5},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.999},  # nuclei beyond the 1024 candidates: full sort
        {"temperature": 1.3, "top_k": 20, "top_p": 1.0},
        {"temperature": 1.3, "top_k": 0, "top_p": 1.0},  # temperature only: the whole vocabulary
        {"temperature": 0.5, "top_k": 1, "top_p": 1.0},  # one candidate: entropy 0
    ],
)
def test_sampling_entropy_matches_transformers_warpers(sampling):
    logits = random_rows()
    params = SamplingParams(do_sample=True, **sampling)
    drawn, entropy = sample_with_entropy(logits, params, SEEDS, 3)
    assert torch.equal(drawn, sample_tokens(logits, params, SEEDS, 3))
    assert entropy.dtype == torch.float32 and entropy.shape == (16,)
    torch.testing.assert_close(entropy.double(), transformers_entropies(logits, params), atol=2e-5, rtol=1e-5)
    if sampling["top_k"] == 1:
        assert (entropy == 0).all()


@pytest.mark.parametrize(
    ("vocab", "step", "offset", "top_k"),
    [(4096, 1 / 256, 64.0, 0), (4096, 1 / 1024, 64.0, 0), (4096, 1 / 256, 64.0, 2000)],
)
def test_sampling_entropy_at_the_nucleus_boundary(vocab, step, offset, top_k):
    """The token whose mass before it is top_p - 1e-6 is in the distribution, as in transformers."""
    logits, top_p, _ = boundary_case(vocab, step, offset, top_k)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p)
    _, entropy = sample_with_entropy(logits, params, SEEDS[:1], 0)
    torch.testing.assert_close(entropy.double(), transformers_entropies(logits, params), atol=2e-5, rtol=1e-5)


def numpy_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row's softmax, float64, written independently of torch."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(np.exp(logp) * logp).sum(axis=1)


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.6])
def test_tempered_entropy_is_the_full_vocabulary_entropy_at_the_temperature(temperature):
    logits = random_rows()
    params = SamplingParams(do_sample=True, temperature=temperature, top_k=20, top_p=0.9)
    chosen, metrics = sample_with_metrics(logits, params, SEEDS, 3)
    assert torch.equal(chosen, sample_tokens(logits, params, SEEDS, 3))
    assert set(metrics) == {"sampling_entropy", "tempered_entropy"}
    assert metrics["tempered_entropy"].dtype == torch.float32
    expected = numpy_entropy(logits.double().numpy() / temperature)
    np.testing.assert_allclose(metrics["tempered_entropy"].double().numpy(), expected, atol=2e-5, rtol=1e-5)
    # top-k and top-p cut the sampled distribution, never the tempered one
    assert (metrics["sampling_entropy"] <= metrics["tempered_entropy"] + 1e-5).all()


def test_tempered_entropy_hand_computed():
    """Two equal logits and a third at -inf: ln 2 at any temperature; logits (0, ln 3) at T = 1:
    p = (1/4, 3/4), H = ln 4 - (3/4) ln 3."""
    logits = torch.tensor([[1.0, 1.0, float("-inf")], [0.0, float(np.log(3.0)), float("-inf")]])
    got = tempered_entropy(logits, SamplingParams(do_sample=True, temperature=0.5))
    assert got[0].item() == pytest.approx(np.log(2.0), abs=1e-6)
    at_one = tempered_entropy(logits, SamplingParams(do_sample=True, temperature=1.0))
    assert at_one[1].item() == pytest.approx(np.log(4.0) - 0.75 * np.log(3.0), abs=1e-6)


def test_greedy_tempered_entropy_is_the_raw_entropy():
    logits = random_rows()
    params = SamplingParams(do_sample=False, temperature=0.5)
    _, metrics = sample_with_metrics(logits, params, SEEDS, 0)
    np.testing.assert_allclose(
        metrics["tempered_entropy"].double().numpy(), numpy_entropy(logits.double().numpy()), atol=2e-5
    )


def test_greedy_sampling_entropy_is_zero():
    logits = random_rows()
    params = SamplingParams(do_sample=False)
    drawn, entropy = sample_with_entropy(logits, params, SEEDS, 0)
    assert torch.equal(drawn, logits.argmax(-1)) and torch.equal(entropy, torch.zeros(16))


def test_masked_vocabulary_adds_nothing():
    """-inf logits (a model masking entries) among the candidates keep the entropy finite."""
    logits = random_rows()
    logits[:, ::2] = float("-inf")
    for params in (SamplingParams(temperature=0.8, top_k=2000, top_p=1.0), SamplingParams(temperature=0.8, top_p=0.97)):
        _, entropy = sample_with_entropy(logits, params, SEEDS, 1)
        assert torch.isfinite(entropy).all()
        torch.testing.assert_close(entropy.double(), transformers_entropies(logits, params), atol=2e-5, rtol=1e-5)


def test_top_p_draws_the_same_tokens_with_and_without_the_cpu_candidate_shortcut(monkeypatch):
    """On the CPU top-p without top-k first tries the top candidates; elsewhere it sorts the whole
    vocabulary (no host read per step). Both keep the same nucleus, so they draw the same tokens."""
    from tokenscope.generation import sampling

    generator = torch.Generator().manual_seed(7)
    # Peaked rows (nucleus inside the candidates) and flat rows (nucleus beyond them).
    logits = torch.cat(
        [torch.randn(16, 4096, generator=generator) * 6, torch.randn(16, 4096, generator=generator) * 0.1]
    )
    params = SamplingParams(do_sample=True, temperature=0.9, top_k=0, top_p=0.85)
    seeds = torch.arange(32)
    shortcut, shortcut_entropy = sampling.sample_with_entropy(logits, params, seeds, 3)
    monkeypatch.setattr(sampling, "_candidates_first", lambda device: False)
    full, full_entropy = sampling.sample_with_entropy(logits, params, seeds, 3)
    assert torch.equal(shortcut, full)
    torch.testing.assert_close(shortcut_entropy, full_entropy, rtol=1e-5, atol=1e-5)
