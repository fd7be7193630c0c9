"""The per-position reference: a plain per-position implementation of the metric definitions, the
tests' ground truth. Kept plain on purpose: one sequence, one position at a time, no batching,
padding or caching, so that the optimised code paths can be checked row by row against it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def per_position_reference(model, tokenizer, ids: list[int], prompt_length: int) -> list[dict]:
    """For one sequence, every position from the prompt's last token on: the entropy of the model's
    next-token distribution there, and the probability and rank of the token that actually follows."""
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
            }
        )
    return stats


def assert_matches_reference(model, tokenizer, frame: pd.DataFrame, sequences: dict, tol: float = 1e-4) -> None:
    """Every row equals the per-position reference's value at the same position."""
    checked = 0
    for (prompt_id, sample), rows in frame.groupby(["prompt_id", "sample"]):
        ids, start = sequences[(prompt_id, sample)]
        expected = pd.DataFrame(per_position_reference(model, tokenizer, ids, start))
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
        checked += len(rows)
    assert checked == len(frame) > 0


def generation_table_sequences(generations: pd.DataFrame) -> dict:
    """(prompt_id, sample) -> (prompt + generated token ids, prompt length) of a generations table."""
    return {
        (r.prompt_id, r.sample): (list(r.prompt_token_ids) + list(r.token_ids), len(r.prompt_token_ids))
        for r in generations.itertuples()
    }
