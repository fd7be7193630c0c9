"""Sampling's top-k/top-p support (generation.sampling): the tokens it can draw are the ones
transformers' logits warpers leave, also at the nucleus boundary."""

from __future__ import annotations

import pytest
import torch

from tokenscope.generation.sampling import SamplingParams, sample_tokens, sampled_support


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
