"""Teacher-forced scoring: one forward pass per batch of given sequences, metrics in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope.errors import PromptSetError
from tokenscope.inputs.batching import length_sorted_batches, pad, pad_id_of
from tokenscope.inputs.chat import ScoreSpan
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
from tokenscope.scoring.options import renamed_top_k
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
    batch_size: int,
    n_alternatives: int | None = None,
    chunk_rows: int = 512,
    pad_id: int = 0,
    show_progress: bool = True,
    *,
    top_k: int | None = None,
) -> TokenMetrics:
    """Metrics of tokens sequences[i][score_starts[i]:] given their prefixes, flat in input order.

    Sequences are batched by length with right padding (causal attention: padding after a
    token cannot change it). Only the hidden states of scored positions go through the output
    embedding, chunk_rows at a time, so no [sequence x vocabulary] tensor is ever whole.
    `n_alternatives` (default 5) most probable tokens are recorded per position (`top_k`: its
    deprecated name). The metrics are those of the raw distribution (entropy, varentropy, margin,
    logprob, rank, alternatives); `sampling_entropy` is None, as nothing was sampled (a null column
    in the per-token table).
    """
    k = renamed_top_k(n_alternatives, top_k, "score_sequences")
    layout = ScoringLayout.build(sequences, score_starts, batch_size)
    unembed, body = Unembedding(model), backbone(model)
    device = next(model.parameters()).device
    parts: list[TokenMetrics] = []
    for batch in layout.iter_batches(sequences, pad_id, "scoring", show_progress):
        hidden = batch.scored_hidden(body)
        parts.append(chunked_metrics(hidden, batch.targets.to(device), unembed, k, chunk_rows).to("cpu"))
    if not parts:
        return TokenMetrics.empty(k)
    return TokenMetrics.cat(parts).take(layout.input_order())


def score_token_sequences(
    model: CausalLM,
    tokenizer: Tokenizer,
    sequences: Sequence[ScoredSequence],
    *,
    model_name: str,
    source: str,
    prompt_set: str,
    batch_size: int = 8,
    n_alternatives: int | None = None,
    chunk_rows: int = 512,
    show_progress: bool = True,
    vocab: VocabularyStrings | None = None,
    top_k: int | None = None,
) -> pa.Table:
    """Teacher-forced metrics of given token sequences under `model`, as a per-token table.

    Sequences longer than the model's positions are refused (ConfigError naming the prompt).
    `n_alternatives` (default 5) alternatives are recorded per token (`top_k`: its deprecated name).
    """
    k = renamed_top_k(n_alternatives, top_k, "score_token_sequences")
    require_within_context(sequences, max_positions(model), model=model_name, source=source)
    metrics = score_sequences(
        model,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        batch_size=batch_size,
        n_alternatives=k,
        chunk_rows=chunk_rows,
        pad_id=pad_id_of(tokenizer),
        show_progress=show_progress,
    )
    vocab = vocab if vocab is not None else VocabularyStrings.from_tokenizer(tokenizer)
    return token_table(sequences, metrics, vocab, model=model_name, source=source, prompt_set=prompt_set)


def _scoring_options(scoring: dict[str, Any], caller: str) -> dict[str, Any]:
    """score_token_sequences' options, the deprecated `top_k` renamed (warned about as `caller`'s)."""
    if "top_k" in scoring:
        scoring = dict(scoring)
        top_k = scoring.pop("top_k")
        scoring["n_alternatives"] = renamed_top_k(scoring.pop("n_alternatives", None), top_k, caller)
    return scoring


def run_teacher_forcing(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    span: ScoreSpan = "answer",
    **scoring: Any,
) -> pa.Table:
    """Score the prompts' reference answers (teacher forcing), as a per-token table.

    `scoring` are score_token_sequences' options (batch_size, n_alternatives, chunk_rows,
    show_progress). The answer span also holds the template's tokens after the answer text
    (e.g. ChatML's `<|im_end|>` and newline); the `in_answer` column tells them apart.
    `write_teacher_forcing` writes the same rows to a file, a chunk of sequences at a time.
    """
    scoring = _scoring_options(scoring, "run_teacher_forcing")
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    sequences = reference_sequences(tokenizer, prompts, span, vocab=vocab)
    if not sequences:
        raise PromptSetError(f"prompt set {prompt_set!r} has no 'reference' answers to score")
    return score_token_sequences(
        model,
        tokenizer,
        sequences,
        model_name=model_name,
        source="reference",
        prompt_set=prompt_set,
        vocab=vocab,
        **scoring,
    )


def write_empty_reference_table(path: str | Path) -> None:
    """write_teacher_forcing's table for prompts none of which has a reference: no rows, its schema."""
    write_parquet_stream([], path, TOKEN_SCHEMA)


def write_teacher_forcing(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    path: str | Path,
    *,
    model_name: str,
    prompt_set: str,
    span: ScoreSpan = "answer",
    chunk_tokens: int = SCORING_CHUNK_TOKENS,
    show_progress: bool = True,
    **scoring: Any,
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
    scoring = _scoring_options(scoring, "write_teacher_forcing")
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    sequences = reference_sequences(tokenizer, prompts, span, vocab=vocab)
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
                vocab=vocab,
                show_progress=False,
                **scoring,
            )
            progress.update(sum(s.n_scored for s in chunk))

    try:
        return write_parquet_stream(tables(), path, TOKEN_SCHEMA)
    finally:
        progress.close()
