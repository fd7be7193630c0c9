"""Varentropy and margin (scoring.formulas.metrics_from_logits) against dense float64 references
computed independently in numpy, on rows of every shape a model produces: peaked, flat, masked
vocabulary entries, large logits; and the entropy they come with is the one every other path uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenscope.scoring.formulas import (
    TokenMetrics,
    entropy_from_log_probs,
    log_probs,
    metrics_from_logits,
    surprisal_moments,
)


def numpy_reference(logits: np.ndarray) -> dict[str, np.ndarray]:
    """entropy, varentropy (two-pass, around the entropy) and margin of each row, float64 numpy."""
    x = logits.astype(np.float64)
    finite = np.isfinite(x)
    shifted = np.where(finite, x - x.max(-1, keepdims=True), -np.inf)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    p = np.exp(logp)
    surprisal = np.where(finite, -logp, 0.0)
    entropy = (p * surprisal).sum(-1)
    varentropy = (p * (surprisal - entropy[:, None]) ** 2).sum(-1)
    ordered = np.sort(logp, axis=-1)
    return {"entropy": entropy, "varentropy": varentropy, "margin": ordered[:, -1] - ordered[:, -2]}


def varied_rows(vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    rows = [
        torch.randn(vocab, generator=generator) * scale + offset
        for scale, offset in [(0.5, 0), (1, 20), (2.5, 40), (4, -10), (8, 60), (0.1, 100)]
    ]
    peaked = torch.randn(vocab, generator=generator)
    peaked[7] = 40.0  # nearly deterministic: varentropy tiny but positive
    tied = torch.randn(vocab, generator=generator)
    tied[[3, 11]] = 12.0  # two equal top logits: margin 0
    masked = torch.randn(vocab, generator=generator) * 3
    masked[: vocab // 2] = float("-inf")  # a model masking half its vocabulary
    return torch.stack([*rows, peaked, tied, masked]).float()


@pytest.mark.parametrize("vocab", [50, 4096, 49152])
def test_varentropy_and_margin_against_numpy(vocab):
    logits = varied_rows(vocab)
    targets = (torch.arange(logits.shape[0]) * 5 + vocab // 2) % vocab
    got = metrics_from_logits(logits, targets, top_k=5)
    expected = numpy_reference(logits.numpy())
    np.testing.assert_allclose(got.entropy.numpy(), expected["entropy"], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(got.varentropy.numpy(), expected["varentropy"], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(got.margin.numpy(), expected["margin"], atol=1e-5, rtol=0)
    assert got.margin[6] > 20 and got.margin[7] == 0
    assert got.varentropy.dtype == got.margin.dtype == torch.float32 and got.sampling_entropy is None
    assert torch.isfinite(got.varentropy).all() and (got.varentropy >= 0).all()


def test_varentropy_does_not_cancel_on_flat_rows():
    """A uniform row has varentropy 0 while E[s^2] and H^2 are both (log V)^2 ~ 117: the two-pass
    sum keeps it near 0, where E[s^2] - H^2 in fp32 would be off by ~1e-5."""
    logits = torch.full((2, 49152), 3.0)
    logits[1, ::2] = 3.0 + 2.0**-10  # two levels very close together: tiny variance
    got = metrics_from_logits(logits, torch.zeros(2, dtype=torch.long), top_k=1)
    expected = numpy_reference(logits.numpy())["varentropy"]
    assert got.varentropy[0] <= 1e-10
    np.testing.assert_allclose(got.varentropy.numpy(), expected, atol=1e-9, rtol=0)


def test_margin_and_alternatives_without_alternatives():
    """n_alternatives 0 still gives the margin (top-2 is taken whatever k is); one token: inf."""
    logits = torch.tensor([[1.0, 3.0, 2.5, -1.0]])
    got = metrics_from_logits(logits, torch.tensor([2]), top_k=0)
    assert got.topk_ids.shape == (1, 0) and got.topk_logprobs.shape == (1, 0)
    torch.testing.assert_close(got.margin, torch.tensor([0.5]))
    one = metrics_from_logits(torch.tensor([[2.0]]), torch.tensor([0]), top_k=5)
    assert torch.isinf(one.margin).all() and one.varentropy.item() == 0 and one.topk_ids.shape == (1, 1)


def test_entropy_is_the_same_in_every_path():
    """metrics_from_logits, surprisal_moments and entropy_from_log_probs (cross-scoring, logit lens,
    sampling) agree to the bit, so a model's own entropy equals its entropy_a in a pair table."""
    logits = varied_rows(3000)
    got = metrics_from_logits(logits, torch.zeros(logits.shape[0], dtype=torch.long), top_k=3)
    logp = log_probs(logits)
    assert torch.equal(got.entropy, entropy_from_log_probs(logp))
    entropy, varentropy = surprisal_moments(logp)
    assert torch.equal(got.entropy, entropy) and torch.equal(got.varentropy, varentropy)
    assert torch.equal(logp, log_probs(logits))  # not overwritten without overwrite=True


def test_token_metrics_rows_keep_a_missing_sampling_entropy():
    parts = [metrics_from_logits(torch.randn(n, 20), torch.zeros(n, dtype=torch.long), top_k=2) for n in (3, 4)]
    joined = TokenMetrics.cat(parts)
    assert joined.entropy.shape == (7,) and joined.sampling_entropy is None
    assert joined.take(torch.tensor([6, 0])).sampling_entropy is None
    with_sampling = [TokenMetrics(**{**vars(p), "sampling_entropy": torch.zeros(p.entropy.shape[0])}) for p in parts]
    assert TokenMetrics.cat(with_sampling).take(torch.tensor([1, 5])).sampling_entropy.shape == (2,)
    with pytest.raises(ValueError, match="sampling_entropy"):
        TokenMetrics.cat([parts[0], with_sampling[1]])
    empty = TokenMetrics.empty(3)
    assert empty.varentropy.shape == empty.margin.shape == (0,) and empty.sampling_entropy is None
