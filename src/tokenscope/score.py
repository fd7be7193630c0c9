"""Teacher-forced scoring: one forward pass per batch of given sequences, metrics in chunks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tokenscope.batching import length_sorted_batches, pad
from tokenscope.metrics import TokenMetrics, Unembedding, backbone, chunked_metrics


@torch.no_grad()
def score_sequences(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    score_starts: Sequence[int],
    batch_size: int,
    top_k: int = 5,
    chunk_rows: int = 512,
    pad_id: int = 0,
    show_progress: bool = True,
) -> TokenMetrics:
    """Metrics of tokens sequences[i][score_starts[i]:] given their prefixes, flat in input order.

    Sequences are batched by length with right padding (causal attention: padding after a
    token cannot change it). Only the hidden states of scored positions go through the output
    embedding, chunk_rows at a time, so no [sequence x vocabulary] tensor is ever whole.
    """
    device = next(model.parameters()).device
    unembed = Unembedding(model)
    body = backbone(model)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    starts = np.asarray(score_starts, dtype=np.int64)
    if np.any(starts < 1) or np.any(starts > lengths):
        raise ValueError("score_starts must be in [1, len(sequence)]")
    counts = lengths - starts
    batches = list(length_sorted_batches(lengths, batch_size))
    order = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    parts: list[TokenMetrics] = []
    progress = tqdm(total=int(counts.sum()), unit="tok", desc="scoring", disable=not show_progress, mininterval=2.0)
    for rows in batches:
        ids, mask = pad([sequences[i] for i in rows], pad_id, "right", device)
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        # Scored token t is predicted from position t - 1.
        row_of = np.repeat(np.arange(len(rows)), counts[rows])
        token_pos = np.concatenate([np.arange(starts[i], lengths[i]) for i in rows]) if len(rows) else np.zeros(0, int)
        row_t = torch.as_tensor(row_of, device=device)
        pos_t = torch.as_tensor(token_pos, device=device)
        parts.append(chunked_metrics(hidden[row_t, pos_t - 1], ids[row_t, pos_t], unembed, top_k, chunk_rows).to("cpu"))
        progress.update(int(counts[rows].sum()))
    progress.close()
    sorted_metrics = TokenMetrics.cat(parts)
    # Back to input order: flat offset of each sequence in the sorted output.
    sorted_offsets = np.zeros(len(order), dtype=np.int64)
    sorted_offsets[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
    gather = np.concatenate([np.arange(sorted_offsets[i], sorted_offsets[i] + counts[i]) for i in range(len(order))])
    index = torch.as_tensor(gather, dtype=torch.long)
    return TokenMetrics(*(getattr(sorted_metrics, f)[index] for f in TokenMetrics.__dataclass_fields__))
