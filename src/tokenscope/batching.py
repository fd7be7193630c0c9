"""Length-sorted batches and padding, shared by generation, scoring and the benchmark."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices of the sequences in batches, longest first, so padding stays small."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]


def pad(
    sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"], device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """(ids, attention mask) of sequences padded to the longest; left padding for generation."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)
