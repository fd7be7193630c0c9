"""The seed notebook's per-position method, kept plain on purpose: the tests' ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seed_stats(model, tokenizer, ids: list[int], prompt_length: int) -> list[dict]:
    """get_stats_for_generation from the seed notebook, one sequence, one position at a time."""
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
