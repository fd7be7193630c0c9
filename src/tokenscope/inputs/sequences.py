"""Scored sequences: token ids and the index from which their tokens are scored.

The one builder from generations (prompt ids + generated ids) and the one from reference answers
(the chat with the answer as the assistant turn), used by generation, teacher forcing,
cross-scoring and the internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenscope.inputs.chat import ScoreSpan, teacher_forced_ids
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.transforms import splice_insertion

if TYPE_CHECKING:
    from tokenscope.model.types import TokenIds, Tokenizer


@dataclass(frozen=True)
class ScoredSequence:
    """A token sequence of which tokens [score_start:] are scored."""

    prompt_id: str
    sample: int
    token_ids: np.ndarray  # full sequence: prompt then completion
    score_start: int
    prompt_length: int

    @property
    def n_scored(self) -> int:
        return len(self.token_ids) - self.score_start


def generated_sequences(
    prompt_ids: Sequence[str],
    samples: Sequence[int],
    prompt_token_ids: Sequence[TokenIds],
    token_ids: Sequence[TokenIds],
) -> list[ScoredSequence]:
    """Generations as scored sequences: the prompt, then the generated tokens, scored from the first."""
    sequences = []
    for prompt_id, sample, prompt, generated in zip(prompt_ids, samples, prompt_token_ids, token_ids, strict=True):
        prompt_array = np.asarray(prompt, dtype=np.int64)
        sequences.append(
            ScoredSequence(
                prompt_id=str(prompt_id),
                sample=int(sample),
                token_ids=np.concatenate([prompt_array, np.asarray(generated, dtype=np.int64)]),
                score_start=len(prompt_array),
                prompt_length=len(prompt_array),
            )
        )
    return sequences


def generation_table_sequences(generations: Any) -> list[ScoredSequence]:
    """The sequences of a generations table (pandas DataFrame), in its row order."""
    return generated_sequences(
        generations["prompt_id"], generations["sample"], generations["prompt_token_ids"], generations["token_ids"]
    )


def reference_sequences(
    tokenizer: Tokenizer, prompts: Sequence[Prompt], span: ScoreSpan = "answer"
) -> list[ScoredSequence]:
    """The chats with their reference answers appended, for the prompts that have one."""
    sequences = []
    for prompt in prompts:
        if prompt.reference is None:
            continue
        ids, start, prompt_length = teacher_forced_ids(tokenizer, prompt.messages, prompt.reference, span)
        ids, inserted = splice_insertion(tokenizer, prompt.messages, prompt.insertion, ids)
        if inserted is not None:
            added = inserted[1] - inserted[0]
            prompt_length += added
            start = start + added if start > inserted[0] else start
        sequences.append(ScoredSequence(prompt.id, 0, np.asarray(ids, dtype=np.int64), start, prompt_length))
    return sequences
