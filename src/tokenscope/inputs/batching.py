"""Length-sorted batches and padding of token ids, shared by generation, scoring, internals and finetuning."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from tokenscope.errors import ModelError

if TYPE_CHECKING:
    from tokenscope.model.types import TokenIds, Tokenizer


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Indices of the sequences in batches, longest first, so padding stays small."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]


def padding_bounded_groups(
    lengths: Sequence[int] | np.ndarray, max_padding: float, max_tokens: int
) -> list[np.ndarray]:
    """Indices of the sequences in groups of similar length, longest first: a group takes the next
    sequence while its padded size (members x longest) stays within (1 + max_padding) x its real
    tokens and within max_tokens (a longer sequence is a group of its own)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    groups: list[list[int]] = []
    longest = real = 0
    for index in order.tolist():
        length = int(lengths[index])
        if groups:
            padded = (len(groups[-1]) + 1) * longest
            if padded <= (1 + max_padding) * (real + length) and padded <= max_tokens:
                groups[-1].append(index)
                real += length
                continue
        groups.append([index])
        longest = real = length
    return [np.array(group, dtype=np.int64) for group in groups]


def pad(
    sequences: Sequence[TokenIds], pad_id: int, side: Literal["left", "right"], device: torch.device | str
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


def pad_id_of(tokenizer: Tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else its end-of-sequence token.

    Padding never changes a metric (padded positions are masked or come after the scored ones).
    load_prepared_tokenizer sets the pad token to the end-of-sequence token when it has none; a
    tokenizer with neither is a ModelError naming it.
    """
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    name = tokenizer.name_or_path or type(tokenizer).__name__
    raise ModelError(
        f"tokenizer {name} has neither a pad nor an end-of-sequence token to pad batches with; "
        "set pad_token in its tokenizer_config.json"
    )
