"""The logit formulas (scoring.formulas): per-token metrics and the divergence between two models'
logits equal their definitions, masked vocabulary entries included."""

from __future__ import annotations

import torch

from tokenscope.scoring.formulas import divergence_from_logits, metrics_from_logits


def test_metrics_from_logits_against_definitions():
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    logits[0, :10] = float("-inf")  # masked vocabulary entries contribute nothing
    targets = torch.tensor([12, 3, 7, 0, 49, 20])
    m = metrics_from_logits(logits.to(torch.bfloat16).float(), targets, top_k=4)
    ref_logits = logits.to(torch.bfloat16).float()
    expected_entropy = torch.distributions.Categorical(logits=ref_logits).entropy()
    torch.testing.assert_close(m.entropy, expected_entropy, atol=1e-5, rtol=0)
    probs = torch.softmax(ref_logits, -1)
    torch.testing.assert_close(m.prob, probs[torch.arange(6), targets], atol=1e-6, rtol=1e-5)
    expected_rank = (ref_logits > ref_logits[torch.arange(6), targets][:, None]).sum(-1) + 1
    assert m.rank.tolist() == expected_rank.tolist()
    top = probs.topk(4)
    assert m.topk_ids.tolist() == top.indices.tolist()
    torch.testing.assert_close(m.topk_logprobs.exp(), top.values)


def test_divergence_handles_masked_vocabulary():
    torch.manual_seed(0)
    logits_a, logits_b = torch.randn(4, 30) * 3, torch.randn(4, 30) * 3
    logits_a[0, :5] = logits_b[0, :5] = float("-inf")  # excluded by both: contributes nothing
    logits_a[1, :5] = float("-inf")  # A excludes what B allows: KL(A||B) finite, KL(B||A) infinite
    targets = torch.tensor([7, 9, 2, 29])
    got = divergence_from_logits(logits_a, logits_b, targets)
    logp_a, logp_b = torch.log_softmax(logits_a.double(), -1), torch.log_softmax(logits_b.double(), -1)

    def finite_terms(p, logp, logq):
        return torch.where(p > 0, p * (logp - logq), 0).sum(-1)

    expected_ab = finite_terms(logp_a.exp(), logp_a, logp_b)
    torch.testing.assert_close(got.kl_a_b, expected_ab.float(), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got.kl_a_b).all() and torch.isfinite(got.entropy_a).all()
    assert torch.isinf(got.kl_b_a[1]) and torch.isfinite(got.kl_b_a[[0, 2, 3]]).all()
    expected_ba = finite_terms(logp_b.exp(), logp_b, logp_a)
    torch.testing.assert_close(got.kl_b_a[[0, 2, 3]], expected_ba[[0, 2, 3]].float(), atol=1e-5, rtol=1e-5)
