"""Arrow tables of generations, per-token scores and pair scores; columns are documented in docs/schema.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch import Tensor

from tokenscope.inputs.sequences import ScoredSequence
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.model.types import TokenIds
from tokenscope.schema_version import SCHEMA_VERSION
from tokenscope.scoring.catalogue import PAIR_METRICS, TOKEN_METRICS, Metric, metrics_of
from tokenscope.scoring.formulas import PairMetrics, TokenMetrics, host_exp

# Where a scored token is (ScoredPositions.key_columns): shared by the token and pair tables.
SCORED_TOKEN_KEYS = [
    ("source", pa.string()),
    ("prompt_set", pa.string()),
    ("prompt_id", pa.string()),
    ("sample", pa.int32()),
    ("step", pa.int32()),
    ("position", pa.int32()),
    ("segment", pa.string()),
    ("context_token_id", pa.int32()),
]


def _metric_fields(metrics: Sequence[Metric]) -> list[tuple[str, pa.DataType]]:
    return [(m.name, m.arrow_type) for m in metrics]


TOKEN_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        *SCORED_TOKEN_KEYS,
        ("context_token", pa.string()),
        ("context_piece", pa.string()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
        ("token_piece", pa.string()),
        *_metric_fields(TOKEN_METRICS),
        ("in_answer", pa.bool_()),
    ],
    metadata={"tokenscope_schema": SCHEMA_VERSION, "tokenscope_table": "tokens"},
)

GENERATION_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("prompt_set", pa.string()),
        ("prompt_id", pa.string()),
        ("sample", pa.int32()),
        ("seed", pa.int64()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("token_ids", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("finish_reason", pa.string()),
        ("n_tokens", pa.int32()),
        ("inserted_start", pa.int32()),
        ("inserted_end", pa.int32()),
        # Outcomes (tokenscope.outcomes.answers.OUTCOME_COLUMNS): graded when a set's shards are
        # gathered, against the prompt's answer and with the set's extraction pattern.
        ("answer", pa.string()),
        ("extracted_answer", pa.string()),
        ("correct", pa.bool_()),
        ("opens_think", pa.bool_()),
        ("closes_think", pa.bool_()),
        ("has_boxed", pa.bool_()),
    ],
    metadata={"tokenscope_schema": SCHEMA_VERSION, "tokenscope_table": "generations"},
)


PAIR_SCHEMA = pa.schema(
    [
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        *SCORED_TOKEN_KEYS,
        ("token_id", pa.int32()),
        *_metric_fields(metrics_of("pair", with_alternatives=False)),
    ],
    metadata={"tokenscope_schema": SCHEMA_VERSION, "tokenscope_table": "pairs"},
)

# Both models' top-k alternatives at each position of a pair table (pair_table's `topk`): the
# workflow's pair tables have them when scoring.n_alternatives > 0.
PAIR_ALTERNATIVES_SCHEMA = pa.schema(
    [*PAIR_SCHEMA, *_metric_fields([m for m in PAIR_METRICS if m.with_alternatives])],
    metadata=PAIR_SCHEMA.metadata,
)


def metric_columns(
    values: Mapping[str, Tensor | None], metrics: Sequence[Metric], n: int, vocab: VocabularyStrings | None = None
) -> dict[str, pa.Array]:
    """The columns of catalogue `metrics` for `n` rows, each from `values[metric.field]` ([n] or
    [n, k] on the host): null where a field is None (a metric these rows do not have), the raw
    vocabulary pieces of ids for a string column."""
    columns = {}
    for metric in metrics:
        tensor = values[metric.field]
        if tensor is None:
            columns[metric.name] = pa.nulls(n, metric.arrow_type)
            continue
        array = tensor.numpy()
        if pa.types.is_string(metric.value_type):
            flat = vocab_of(vocab, metric).piece_array(array.astype(np.int32).reshape(-1))
        else:
            flat = pa.array(array.astype(metric.value_type.to_pandas_dtype()).reshape(-1))
        if metric.per_alternative:
            k = array.shape[1]
            flat = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * k), flat)
        columns[metric.name] = flat
    return columns


def vocab_of(vocab: VocabularyStrings | None, metric: Metric) -> VocabularyStrings:
    if vocab is None:
        raise ValueError(f"column {metric.name} needs the vocabulary's strings")
    return vocab


@dataclass(frozen=True)
class ScoredPositions:
    """Where each scored token of some sequences is: flat arrays, one entry per scored token."""

    all_ids: np.ndarray  # every sequence's ids, concatenated
    seq_offsets: np.ndarray  # index in all_ids where each sequence starts
    counts: np.ndarray  # scored tokens per sequence
    step: np.ndarray
    position: np.ndarray
    flat_index: np.ndarray  # index in all_ids of each scored token

    @classmethod
    def of(cls, sequences: Sequence[ScoredSequence]) -> ScoredPositions:
        lengths = np.array([len(s.token_ids) for s in sequences], dtype=np.int64)
        starts = np.array([s.score_start for s in sequences], dtype=np.int64)
        counts = lengths - starts
        n = int(counts.sum())
        empty = np.zeros(0, np.int64)
        all_ids = np.concatenate([s.token_ids for s in sequences]).astype(np.int64) if sequences else empty
        seq_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if sequences else empty
        first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if sequences else empty
        step = np.arange(n) - np.repeat(first_row, counts)
        position = step + np.repeat(starts, counts)
        return cls(all_ids, seq_offsets, counts, step, position, np.repeat(seq_offsets, counts) + position)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def key_columns(self, sequences: Sequence[ScoredSequence]) -> dict[str, pa.Array]:
        """prompt_id, sample, step, position, segment of each scored token."""
        prompt_lengths = np.repeat([s.prompt_length for s in sequences], self.counts).astype(np.int64)
        prompt_ids = pa.array([s.prompt_id for s in sequences], type=pa.string())
        return {
            "prompt_id": pc.take(prompt_ids, pa.array(np.repeat(np.arange(len(sequences)), self.counts))),
            "sample": pa.array(np.repeat([s.sample for s in sequences], self.counts).astype(np.int32)),
            "step": pa.array(self.step.astype(np.int32)),
            "position": pa.array(self.position.astype(np.int32)),
            "segment": pa.array(
                np.where(self.position >= prompt_lengths, "completion", "prompt").astype(object), type=pa.string()
            ),
        }

    def in_answer(self, sequences: Sequence[ScoredSequence]) -> np.ndarray:
        """Whether each scored token is one of its sequence's answer text tokens (`answer_span`)."""
        spans = np.array([s.answer_span for s in sequences], dtype=np.int64).reshape(-1, 2)
        start, end = np.repeat(spans[:, 0], self.counts), np.repeat(spans[:, 1], self.counts)
        return (self.position >= start) & (self.position < end)


def constant_column(value: str, n: int) -> pa.Array:
    return pa.array(np.full(n, value, dtype=object), type=pa.string())


def token_table(
    sequences: Sequence[ScoredSequence],
    metrics: TokenMetrics,
    vocab: VocabularyStrings,
    *,
    model: str,
    source: str,
    prompt_set: str,
) -> pa.Table:
    """One row per scored token; `metrics` rows are in sequence order, then position order.

    `sampling_entropy` is null where `metrics` has none (teacher-forced tokens).
    """
    where = ScoredPositions.of(sequences)
    n = where.n
    if metrics.entropy.shape[0] != n:
        raise ValueError(f"{metrics.entropy.shape[0]} metric rows for {n} scored tokens")
    readable = vocab.readable(where.all_ids, where.seq_offsets)
    token_ids = where.all_ids[where.flat_index]
    context_ids = where.all_ids[where.flat_index - 1]
    columns = {
        "model": constant_column(model, n),
        "source": constant_column(source, n),
        "prompt_set": constant_column(prompt_set, n),
        **where.key_columns(sequences),
        "context_token_id": pa.array(context_ids.astype(np.int32)),
        "context_token": pc.take(readable, pa.array(where.flat_index - 1)),
        "context_piece": vocab.piece_array(context_ids),
        "token_id": pa.array(token_ids.astype(np.int32)),
        "token": pc.take(readable, pa.array(where.flat_index)),
        "token_piece": vocab.piece_array(token_ids),
        **metric_columns({m.field: getattr(metrics, m.field) for m in TOKEN_METRICS}, TOKEN_METRICS, n, vocab),
        "in_answer": pa.array(where.in_answer(sequences), type=pa.bool_()),
    }
    return pa.table(columns, schema=TOKEN_SCHEMA)


@dataclass(frozen=True)
class GeneratedRows:
    """The rows of a generations table: one value per generation in each field, in row order.
    `inserted`: the (start, end) token span of each prompt's insertion (None: none)."""

    prompt_ids: Sequence[str]
    samples: Sequence[int]
    seeds: Sequence[int]
    prompt_token_ids: Sequence[TokenIds]
    token_ids: Sequence[TokenIds]
    texts: Sequence[str]
    finish_reasons: Sequence[str]
    inserted: Sequence[tuple[int, int] | None] | None = None


def generation_table(
    rows: GeneratedRows,
    *,
    model: str,
    prompt_set: str,
    outcomes: Mapping[str, Sequence[object]] | None = None,
) -> pa.Table:
    """One row per generation of `rows`. `outcomes`: the outcome columns, graded by the caller
    (tokenscope.outcomes.answers.grade_all, column name -> one value per generation); None leaves
    them null."""
    n = len(rows.prompt_ids)
    spans = list(rows.inserted) if rows.inserted is not None else [None] * n
    nulls: dict[str, Sequence[object]] = {name: [None] * n for name in GENERATION_SCHEMA.names}
    return pa.table(
        {
            **nulls,  # what is not given below: the outcome columns unless `outcomes` has them
            **(outcomes or {}),
            "model": [model] * n,
            "prompt_set": [prompt_set] * n,
            "prompt_id": list(rows.prompt_ids),
            "sample": list(rows.samples),
            "seed": list(rows.seeds),
            "prompt_token_ids": [list(map(int, p)) for p in rows.prompt_token_ids],
            "token_ids": [list(map(int, t)) for t in rows.token_ids],
            "text": list(rows.texts),
            "finish_reason": list(rows.finish_reasons),
            "n_tokens": [len(t) for t in rows.token_ids],
            "inserted_start": [None if s is None else s[0] for s in spans],
            "inserted_end": [None if s is None else s[1] for s in spans],
        },
        schema=GENERATION_SCHEMA,
    )


def pair_table(
    *,
    model_a: str,
    model_b: str,
    source: str,
    prompt_set: str,
    sequences: Sequence[ScoredSequence],
    metrics: PairMetrics,
    topk: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> pa.Table:
    """One row per scored token of `sequences` (PAIR_SCHEMA); `metrics` rows in input order.

    `topk`: (ids_a, logprobs_a, ids_b, logprobs_b), each [N, k] in the same order: the table is then
    PAIR_ALTERNATIVES_SCHEMA, with both models' alternatives.
    """
    where = ScoredPositions.of(sequences)
    n = where.n
    plain = metrics_of("pair", with_alternatives=False)
    if metrics.kl_a_b.shape[0] != n:
        raise ValueError(f"{metrics.kl_a_b.shape[0]} metric rows for {n} scored tokens")
    columns = {
        "model_a": constant_column(model_a, n),
        "model_b": constant_column(model_b, n),
        "source": constant_column(source, n),
        "prompt_set": constant_column(prompt_set, n),
        **where.key_columns(sequences),
        "context_token_id": pa.array(where.all_ids[where.flat_index - 1].astype(np.int32)),
        "token_id": pa.array(where.all_ids[where.flat_index].astype(np.int32)),
        **metric_columns({m.field: getattr(metrics, m.field) for m in plain}, plain, n),
    }
    if topk is None:
        return pa.table(columns, schema=PAIR_SCHEMA)
    ids_a, logprobs_a, ids_b, logprobs_b = topk
    alternatives = {
        "topk_ids_a": ids_a,
        "topk_probs_a": host_exp(logprobs_a),
        "topk_ids_b": ids_b,
        "topk_probs_b": host_exp(logprobs_b),
    }
    columns.update(metric_columns(alternatives, [m for m in PAIR_METRICS if m.with_alternatives], n))
    return pa.table(columns, schema=PAIR_ALTERNATIVES_SCHEMA)
