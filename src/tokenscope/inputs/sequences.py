"""Scored sequences: token ids and the index from which their tokens are scored.

The one builder from generations (prompt ids + generated ids) and the one from reference answers
(the chat with the answer as the assistant turn), used by generation, teacher forcing,
cross-scoring and the internals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from tokenscope.errors import ConfigError
from tokenscope.inputs.chat import ScoreSpan, teacher_forced_ids
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.transforms import splice_insertion
from tokenscope.model.token_text import VocabularyStrings

if TYPE_CHECKING:
    from tokenscope.model.types import TokenIds, Tokenizer


@dataclass(frozen=True)
class ScoredSequence:
    """A token sequence of which tokens [score_start:] are scored.

    Tokens [answer_start:answer_end] hold the answer text itself (the generated tokens, or the
    reference answer without the chat template's tokens around it); None means from
    `prompt_length`, and to the end.
    """

    prompt_id: str
    sample: int
    token_ids: np.ndarray  # full sequence: prompt then completion
    score_start: int
    prompt_length: int
    answer_start: int | None = None
    answer_end: int | None = None

    @property
    def n_scored(self) -> int:
        return len(self.token_ids) - self.score_start

    @property
    def answer_span(self) -> tuple[int, int]:
        """[start, end) of the answer text's tokens."""
        start = self.prompt_length if self.answer_start is None else self.answer_start
        return start, len(self.token_ids) if self.answer_end is None else self.answer_end


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


# The columns of a generations table that make its sequences.
SEQUENCE_COLUMNS = ["prompt_id", "sample", "prompt_token_ids", "token_ids"]


def generation_table_sequences(generations: Any) -> list[ScoredSequence]:
    """The sequences of a generations table (pandas DataFrame), in its row order."""
    return generated_sequences(
        generations["prompt_id"], generations["sample"], generations["prompt_token_ids"], generations["token_ids"]
    )


# Token ids (prompt and scored) per chunk that a streaming scorer (write_pair, write_teacher_forcing)
# scores and writes at once (one row group): about a thousand sequences, enough for length-sorted
# batches and for the row group to compress as well as a whole table; the chunk's table is tens of MB.
SCORING_CHUNK_TOKENS = 1 << 18


def sequence_chunks(
    sequences: Iterable[ScoredSequence], max_tokens: int = SCORING_CHUNK_TOKENS
) -> Iterator[list[ScoredSequence]]:
    """`sequences` in order, in chunks of about `max_tokens` token ids (prompt and generated: what
    a forward pass reads; a chunk closes at the sequence that reaches it)."""
    chunk: list[ScoredSequence] = []
    tokens = 0
    for sequence in sequences:
        chunk.append(sequence)
        tokens += len(sequence.token_ids)
        if tokens >= max_tokens:
            yield chunk
            chunk, tokens = [], 0
    if chunk:
        yield chunk


def generation_file_sequences(path: str | Path) -> Iterator[ScoredSequence]:
    """The sequences of a generations parquet file in its row order, reading only SEQUENCE_COLUMNS
    a record batch at a time (with sequence_chunks, no more than a chunk is held)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=SEQUENCE_COLUMNS):
        yield from generation_table_sequences(batch.to_pandas())


def reference_sequences(
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    span: ScoreSpan = "answer",
    vocab: VocabularyStrings | None = None,
) -> list[ScoredSequence]:
    """The chats with their reference answers appended, for the prompts that have one.

    Each sequence records where the answer text's tokens are (`answer_span`): the chat template's
    tokens after it (e.g. ChatML's `<|im_end|>` and newline) are scored with the answer span but
    are not the answer. `vocab` (built from the tokenizer when not given) locates the text.
    """
    sequences = []
    for prompt in prompts:
        if prompt.reference is None:
            continue
        if vocab is None:
            vocab = VocabularyStrings.from_tokenizer(tokenizer)
        ids, start, prompt_length = teacher_forced_ids(tokenizer, prompt.messages, prompt.reference, span)
        ids, inserted = splice_insertion(tokenizer, prompt.messages, prompt.insertion, ids)
        if inserted is not None:
            added = inserted[1] - inserted[0]
            prompt_length += added
            start = start + added if start > inserted[0] else start
        token_ids = np.asarray(ids, dtype=np.int64)
        answer_start, answer_end = answer_token_span(vocab, token_ids, prompt_length, prompt.reference)
        sequences.append(ScoredSequence(prompt.id, 0, token_ids, start, prompt_length, answer_start, answer_end))
    return sequences


def answer_token_span(vocab: VocabularyStrings, ids: np.ndarray, begin: int, answer: str) -> tuple[int, int]:
    """[start, end) of the tokens of `answer`'s text in ids[begin:], the template's tokens excluded.

    Found on the bytes of the tokens (the bytes their readable strings are made of): the answer as
    given, else as the template trimmed it, else its last 32 characters (a template that rewrites
    the answer); a token that holds both answer and template bytes counts as answer. Where the
    text cannot be found, every token from `begin` on is the answer.
    """
    ids = np.asarray(ids[begin:], dtype=np.int64)
    token_end = np.cumsum(vocab.byte_offsets[ids + 1] - vocab.byte_offsets[ids])
    lengths = np.diff(token_end, prepend=0)
    total = int(token_end[-1]) if ids.size else 0
    gather = np.repeat(vocab.byte_offsets[ids] - (token_end - lengths), lengths) + np.arange(total)
    text = vocab.byte_data[gather].tobytes()
    stripped = answer.strip()
    whole = True  # the needle is the whole answer (else its tail: the answer starts at `begin`)
    found, needle = -1, b""
    for candidate in (answer, stripped):
        needle = candidate.encode("utf-8")
        found = text.find(needle) if needle else -1
        if found >= 0:
            break
    else:
        whole, needle = False, stripped[-32:].encode("utf-8")
        found = text.rfind(needle) if needle else -1
    if found < 0:
        return begin, begin + int(ids.size)
    first = int(np.searchsorted(token_end, found, side="right")) if whole else 0
    last = int(np.searchsorted(token_end, found + len(needle) - 1, side="right"))
    return begin + first, begin + last + 1


def require_within_context(sequences: Sequence[ScoredSequence], limit: int | None, *, model: str, source: str) -> None:
    """Refuse sequences longer than a model's positions (`limit`; None: not declared, not checked).

    `source` is whose tokens they are: `reference` (the reference answers) or a model's name.
    """
    if limit is None or not sequences:
        return
    lengths = np.fromiter((len(s.token_ids) for s in sequences), dtype=np.int64, count=len(sequences))
    over = np.flatnonzero(lengths > limit)
    if not over.size:
        return
    sequence, length = sequences[int(over[0])], int(lengths[over[0]])
    if source == "reference":
        what, hint = f"prompt {sequence.prompt_id!r} with its reference answer", "shorten the prompt or the answer"
    else:
        what = f"prompt {sequence.prompt_id!r} sample {sequence.sample} (generated by {source!r})"
        hint = f"generate with a max_new_tokens that fits model {model!r}"
    more = f" ({over.size - 1} more sequences too)" if over.size > 1 else ""
    raise ConfigError(f"{what}: {length} tokens exceed the {limit} positions of model {model!r}{more}; {hint}")
