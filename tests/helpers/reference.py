"""The per-position reference: a plain per-position implementation of the metric definitions, the
tests' ground truth. Kept plain on purpose: one sequence, one position at a time, no batching,
padding or caching, so that the optimised code paths can be checked row by row against it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def dense_entropy(logits: torch.Tensor) -> float:
    """Entropy (nats) of softmax(logits) over one row, in float64; -inf logits add nothing."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    return float(-(p[p > 0] * logp[p > 0]).sum())


def dense_varentropy(logits: torch.Tensor) -> float:
    """Variance of the surprisal -log p under p = softmax(logits), one row, float64, two passes."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    surprisal = -logp[p > 0]
    return float((p[p > 0] * (surprisal - (p[p > 0] * surprisal).sum()) ** 2).sum())


def dense_margin(logits: torch.Tensor) -> float:
    """log p of the most probable entry minus that of the second, one row, float64."""
    top = torch.log_softmax(logits.double(), dim=-1).topk(2).values
    return float(top[0] - top[1])


def warped_entropy(logits: torch.Tensor, sampling: dict) -> float:
    """Entropy of the distribution transformers samples from (do_sample=True): its temperature,
    top-k and top-p warpers (generate's order) on the fp32 logits, then a float64 softmax; 0 for
    greedy decoding."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if not sampling.get("do_sample", True):
        return 0.0
    scores = TemperatureLogitsWarper(float(sampling.get("temperature", 1.0)))(None, logits.float().view(1, -1).clone())
    if sampling.get("top_k"):
        scores = TopKLogitsWarper(int(sampling["top_k"]))(None, scores)
    if sampling.get("top_p", 1.0) < 1.0:
        scores = TopPLogitsWarper(float(sampling["top_p"]))(None, scores)
    return dense_entropy(scores[0])


def tempered_reference(logits: torch.Tensor, sampling: dict) -> float:
    """Entropy of softmax(logits / T) in float64 at the sampling temperature, no truncation; the raw
    logits' entropy for greedy decoding."""
    temperature = float(sampling.get("temperature", 1.0)) if sampling.get("do_sample", True) else 1.0
    return dense_entropy(logits.double() / temperature)


def per_position_reference(
    model, tokenizer, ids: list[int], prompt_length: int, sampling: dict | None = None
) -> list[dict]:
    """For one sequence, every position from the prompt's last token on: the entropy, varentropy
    and top-1 minus top-2 log-probability margin of the model's next-token distribution there, the
    probability and rank of the token that actually follows, and with `sampling` (generation's
    settings) the entropy of the distribution transformers' warpers would sample from."""
    generated_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=generated_ids).logits
    stats = []
    for j in range(prompt_length - 1, generated_ids.shape[1] - 1):
        pos_logits = logits[0, j, :].float()
        entropy = torch.distributions.Categorical(logits=pos_logits).entropy().item()
        actual_next_token_id = generated_ids[0, j + 1]
        probabilities = F.softmax(pos_logits, dim=-1)
        stats.append(
            {
                "current_token_id": int(generated_ids[0, j]),
                "next_token_id": int(actual_next_token_id),
                "entropy": entropy,
                "probability_of_next_token": probabilities[actual_next_token_id].item(),
                "rank": int((pos_logits > pos_logits[actual_next_token_id]).sum()) + 1,
                "varentropy": dense_varentropy(pos_logits),
                "margin": dense_margin(pos_logits),
                "sampling_entropy": None if sampling is None else warped_entropy(pos_logits, sampling),
                "tempered_entropy": None if sampling is None else tempered_reference(pos_logits, sampling),
            }
        )
    return stats


def assert_matches_reference(
    model, tokenizer, frame: pd.DataFrame, sequences: dict, tol: float = 1e-4, sampling: dict | None = None
) -> None:
    """Every row equals the per-position reference's value at the same position. `sampling`: the
    generation's sampling settings (its sampling_entropy is checked); None for teacher-forced
    tokens, whose sampling_entropy must be null."""
    checked = 0
    for (prompt_id, sample), rows in frame.groupby(["prompt_id", "sample"]):
        ids, start = sequences[(prompt_id, sample)]
        expected = pd.DataFrame(per_position_reference(model, tokenizer, ids, start, sampling))
        expected = expected.iloc[-len(rows) :] if start > 0 else expected
        rows = rows.sort_values("step")
        assert len(rows) == len(expected)
        np.testing.assert_array_equal(rows["token_id"].to_numpy(), expected["next_token_id"].to_numpy())
        np.testing.assert_array_equal(rows["context_token_id"].to_numpy(), expected["current_token_id"].to_numpy())
        np.testing.assert_allclose(rows["entropy"].to_numpy(), expected["entropy"].to_numpy(), atol=tol, rtol=0)
        np.testing.assert_allclose(
            rows["prob"].to_numpy(), expected["probability_of_next_token"].to_numpy(), atol=tol, rtol=0
        )
        np.testing.assert_array_equal(rows["rank"].to_numpy(), expected["rank"].to_numpy())
        for column in ("varentropy", "margin"):
            np.testing.assert_allclose(rows[column].to_numpy(), expected[column].to_numpy(), atol=tol, rtol=tol)
        for column in ("sampling_entropy", "tempered_entropy"):
            if sampling is None:
                assert rows[column].isna().all()
            else:
                np.testing.assert_allclose(
                    rows[column].to_numpy(), expected[column].to_numpy(float), atol=tol, rtol=tol, err_msg=column
                )
        checked += len(rows)
    assert checked == len(frame) > 0


def generation_table_sequences(generations: pd.DataFrame) -> dict:
    """(prompt_id, sample) -> (prompt + generated token ids, prompt length) of a generations table."""
    return {
        (r.prompt_id, r.sample): (list(r.prompt_token_ids) + list(r.token_ids), len(r.prompt_token_ids))
        for r in generations.itertuples()
    }
