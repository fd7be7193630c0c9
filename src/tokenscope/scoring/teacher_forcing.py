"""Teacher-forced scoring: one forward pass per batch of given sequences, metrics in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope.errors import PromptSetError
from tokenscope.inputs.batching import length_sorted_batches, pad, pad_id_of
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.sequences import (
    SCORING_CHUNK_TOKENS,
    ScoredSequence,
    reference_sequences,
    require_within_context,
    sequence_chunks,
)
from tokenscope.io import write_parquet_stream
from tokenscope.model.anatomy import Unembedding, backbone
from tokenscope.model.loading import max_positions
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.model.types import CausalLM, TokenIds, Tokenizer
from tokenscope.scoring.formulas import TokenMetrics, chunked_metrics
from tokenscope.scoring.options import ScoringOptions, scoring_with_deprecated
from tokenscope.scoring.tables import TOKEN_SCHEMA, token_table


@dataclass(frozen=True)
class ScoredBatch:
    """One right-padded batch and where its scored tokens are."""

    rows: np.ndarray  # indices of the batch's sequences in the input
    ids: Tensor  # [B, T] right-padded token ids (CPU)
    mask: Tensor  # [B, T] attention mask (CPU)
    batch_row: Tensor  # [n] row in the batch of each scored token
    position: Tensor  # [n] position of each scored token in its sequence

    @property
    def targets(self) -> Tensor:
        """[n] the scored token ids."""
        return self.ids[self.batch_row, self.position]

    def scored_hidden(self, body: nn.Module) -> Tensor:
        """[n, H] final hidden states that predict the scored tokens, on the body's device.

        Scored token t is predicted from position t - 1; only these rows are kept so that the
        full [B, T, H] states can be freed before the next model runs.
        """
        device = next(body.parameters()).device
        hidden = body(input_ids=self.ids.to(device), attention_mask=self.mask.to(device)).last_hidden_state
        return hidden[self.batch_row.to(device), self.position.to(device) - 1]


@dataclass(frozen=True)
class ScoringLayout:
    """Length-sorted batches of sequences whose tokens [start:] are scored, and the way back.

    Metrics computed batch after batch come out in batch order; `input_order()` gathers them
    back to input order (sequence after sequence, positions ascending).
    """

    lengths: np.ndarray
    starts: np.ndarray
    batches: list[np.ndarray]

    @classmethod
    def build(cls, sequences: Sequence[TokenIds], score_starts: Sequence[int], batch_size: int) -> ScoringLayout:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        starts = np.asarray(score_starts, dtype=np.int64)
        if starts.shape != lengths.shape:
            raise ValueError(f"{len(starts)} score_starts for {len(lengths)} sequences")
        if np.any(starts < 1) or np.any(starts > lengths):
            raise ValueError("score_starts must be in [1, len(sequence)]")
        return cls(lengths, starts, list(length_sorted_batches(lengths, batch_size)))

    @property
    def counts(self) -> np.ndarray:
        return self.lengths - self.starts

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    def iter_batches(
        self, sequences: Sequence[TokenIds], pad_id: int, desc: str = "scoring", show_progress: bool = False
    ) -> Iterator[ScoredBatch]:
        """The batches in order; with show_progress, a progress bar counts their scored tokens."""
        counts = self.counts
        progress = tqdm(total=self.n_tokens, unit="tok", desc=desc, disable=not show_progress, mininterval=2.0)
        for rows in self.batches:
            ids, mask = pad([sequences[i] for i in rows], pad_id, "right", "cpu")
            batch_row = np.repeat(np.arange(len(rows)), counts[rows])
            position = np.concatenate([np.arange(self.starts[i], self.lengths[i]) for i in rows])
            yield ScoredBatch(rows, ids, mask, torch.as_tensor(batch_row), torch.as_tensor(position))
            progress.update(int(counts[rows].sum()))
        progress.close()

    def input_order(self) -> Tensor:
        """Index that takes flat batch-order rows to flat input-order rows."""
        if not self.batches:
            return torch.zeros(0, dtype=torch.long)
        counts = self.counts
        order = np.concatenate(self.batches)
        # flat offset of each sequence's first scored token in batch order
        offsets = np.zeros(len(order), dtype=np.int64)
        offsets[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
        return torch.as_tensor(
            np.concatenate([np.arange(o, o + c) for o, c in zip(offsets, counts, strict=True)]), dtype=torch.long
        )


@torch.no_grad()
def score_sequences(
    model: CausalLM,
    sequences: Sequence[TokenIds],
    score_starts: Sequence[int],
    options: ScoringOptions | None = None,
    pad_id: int = 0,
    show_progress: bool = True,
) -> TokenMetrics:
    """Metrics of tokens sequences[i][score_starts[i]:] given their prefixes, flat in input order.

    Sequences are batched by length (`options.batch_size`) with right padding (causal attention:
    padding after a token cannot change it). Only the hidden states of scored positions go through
    the output embedding, `options.chunk_rows` at a time, so no [sequence x vocabulary] tensor is
    ever whole. `options.n_alternatives` most probable tokens are recorded per position. The
    metrics are those of the raw distribution (entropy, varentropy, margin, logprob, rank,
    alternatives); `sampling_entropy` is None, as nothing was sampled (a null column in the
    per-token table). None `options`: ScoringOptions' defaults.
    """
    options = options if options is not None else ScoringOptions()
    k = options.n_alternatives
    layout = ScoringLayout.build(sequences, score_starts, options.batch_size)
    unembed, body = Unembedding(model), backbone(model)
    device = next(model.parameters()).device
    parts: list[TokenMetrics] = []
    for batch in layout.iter_batches(sequences, pad_id, "scoring", show_progress):
        hidden = batch.scored_hidden(body)
        parts.append(chunked_metrics(hidden, batch.targets.to(device), unembed, k, options.chunk_rows).to("cpu"))
    if not parts:
        return TokenMetrics.empty(k)
    return TokenMetrics.cat(parts).take(layout.input_order())


def score_token_sequences(  # noqa: PLR0913 (the model, its sequences, the table's three labels, options, progress, a shared vocabulary)
    model: CausalLM,
    tokenizer: Tokenizer,
    sequences: Sequence[ScoredSequence],
    *,
    model_name: str,
    source: str,
    prompt_set: str,
    options: ScoringOptions | None = None,
    show_progress: bool = True,
    vocab: VocabularyStrings | None = None,
) -> pa.Table:
    """Teacher-forced metrics of given token sequences under `model`, as a per-token table
    (score_sequences with `options`).

    Sequences longer than the model's positions are refused (ConfigError naming the prompt).
    """
    require_within_context(sequences, max_positions(model), model=model_name, source=source)
    metrics = score_sequences(
        model,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        options,
        pad_id=pad_id_of(tokenizer),
        show_progress=show_progress,
    )
    vocab = vocab if vocab is not None else VocabularyStrings.from_tokenizer(tokenizer)
    return token_table(sequences, metrics, vocab, model=model_name, source=source, prompt_set=prompt_set)


def run_teacher_forcing(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    options: ScoringOptions | None = None,
    show_progress: bool = True,
    **deprecated: int,
) -> pa.Table:
    """Score the prompts' reference answers (teacher forcing), as a per-token table.

    `options`: how (score_sequences) and which tokens: `options.score_span` of each answer
    (`top_k=`: a deprecated name of `options.n_alternatives`). The answer span also holds the
    template's tokens after the answer text (e.g. ChatML's `<|im_end|>` and newline); the
    `in_answer` column tells them apart. `write_teacher_forcing` writes the same rows to a file, a
    chunk of sequences at a time.
    """
    options = scoring_with_deprecated(options, deprecated, "run_teacher_forcing")
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    sequences = reference_sequences(tokenizer, prompts, options.score_span, vocab=vocab)
    if not sequences:
        raise PromptSetError(f"prompt set {prompt_set!r} has no 'reference' answers to score")
    return score_token_sequences(
        model,
        tokenizer,
        sequences,
        model_name=model_name,
        source="reference",
        prompt_set=prompt_set,
        options=options,
        show_progress=show_progress,
        vocab=vocab,
    )


def write_empty_reference_table(path: str | Path) -> None:
    """write_teacher_forcing's table for prompts none of which has a reference: no rows, its schema."""
    write_parquet_stream([], path, TOKEN_SCHEMA)


def write_teacher_forcing(  # noqa: PLR0913 (run_teacher_forcing's, the file it writes and its chunk size)
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    path: str | Path,
    *,
    model_name: str,
    prompt_set: str,
    options: ScoringOptions | None = None,
    chunk_tokens: int = SCORING_CHUNK_TOKENS,
    show_progress: bool = True,
) -> int:
    """Score the prompts' reference answers as run_teacher_forcing does and write the per-token
    table to `path`, about `chunk_tokens` token ids of sequences at a time; returns the token rows.

    Memory is bounded by a chunk (its scores and table), not by the number of answers: a prompt
    set's answers at research scale (10^7 tokens) would not fit as one table. Rows come in the
    same order as run_teacher_forcing's; batches are formed (by length) within a chunk, so floats
    may differ from it in their last bits. Every sequence is checked against the model's positions
    before any is scored. The file appears only when every chunk is written. Prompts without a
    reference are skipped: where none has one (a shard of a prompt set that has references
    elsewhere), the table is empty.
    """
    options = options if options is not None else ScoringOptions()
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    sequences = reference_sequences(tokenizer, prompts, options.score_span, vocab=vocab)
    require_within_context(sequences, max_positions(model), model=model_name, source="reference")
    progress = tqdm(
        total=sum(s.n_scored for s in sequences),
        unit="tok",
        desc="teacher forcing",
        disable=not show_progress,
        mininterval=2.0,
    )

    def tables() -> Iterator[pa.Table]:
        for chunk in sequence_chunks(sequences, chunk_tokens):
            yield score_token_sequences(
                model,
                tokenizer,
                chunk,
                model_name=model_name,
                source="reference",
                prompt_set=prompt_set,
                options=options,
                show_progress=False,
                vocab=vocab,
            )
            progress.update(sum(s.n_scored for s in chunk))

    try:
        return write_parquet_stream(tables(), path, TOKEN_SCHEMA)
    finally:
        progress.close()
