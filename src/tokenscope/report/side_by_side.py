"""Side-by-side view of two checkpoints: self-contained HTML pages of one prompt under models A and B.

A page shows A's and B's generations of the prompt next to each other and, below them, one shared
text that both models scored on the same prefixes (a pair table of `scoring.cross_scoring`: A's
generation, B's, or the reference answer). Each token of the shared text is coloured by the
difference of log-probability log p_B − log p_A (diverging: blue where B gives the token more
probability, red where less) or by the KL divergence between the two next-token distributions
(either direction); a selector switches it. Hovering a token shows both models' numbers and both
models' top-k alternatives at that position (the pair table's topk_*_a / topk_*_b columns). Like
the token view (report.token_view) the page carries its data inline and loads nothing, and every
text reaches the page as JSON read by the script into text nodes (never as HTML).

At research scale a page per sequence would make the report unusable: build_side_by_side chooses
at most `max_pages` sequences of a pair table, stratified by their mean KL(A ‖ B) (the lowest,
median and highest, the rest evenly spaced in rank; report.selection.stratified_ranks), plus every
sequence of the listed prompts, and writes an index of every sequence. The pair table is read
through DuckDB: the summaries and colour scales are aggregates; only the chosen sequences' rows are
read into memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tokenscope.duckdb_tables import connect, parquet_sql, sql_list
from tokenscope.inputs.prompts import Prompt
from tokenscope.io import write_text
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report import pages as shared
from tokenscope.report.options import SideBySideOptions
from tokenscope.report.pages import (
    PAGE_KEYS,
    ViewInputs,
    relative_dir,
    render_sequence_page,
    sequence_page_template,
    sequences,
)
from tokenscope.report.selection import choose_sequences, summaries_by_sequence
from tokenscope.report.token_view import Alternatives, _chosen_rows, _rounded, _scale_max
from tokenscope.scoring.catalogue import page_metrics

# The pair table's columns a page shows; the alternatives' where the table has them.
PAGE_COLUMNS = [
    "prompt_id",
    "sample",
    "step",
    "position",
    "token_id",
    "logprob_a",
    "logprob_b",
    "logprob_diff",
    "entropy_a",
    "entropy_b",
    "kl_a_b",
    "kl_b_a",
]
ALTERNATIVE_COLUMNS = ["topk_ids_a", "topk_probs_a", "topk_ids_b", "topk_probs_b"]
# Generations table columns shown beside the text where present (the answer facts of schema version 3).
GENERATION_FACTS = ["finish_reason", "n_tokens", "extracted_answer", "correct"]
METRIC_KEYS = tuple(scale.key for _, scale in page_metrics("pair"))
DIVERGING_KEYS = {scale.key for _, scale in page_metrics("pair") if scale.diverging}


@dataclass(frozen=True)
class PairContext:
    """Which pair table a page comes from: models A and B on the tokens of `source`."""

    model_a: str
    model_b: str
    prompt_set: str
    source: str  # the model whose generations were scored, or "reference"

    @property
    def shared_text(self) -> str:
        return "the reference answer" if self.source == "reference" else f"{self.source}'s generation"


def metric_labels(context: PairContext) -> dict[str, tuple[str, str]]:
    """Metric key -> (label, description) as a page shows them."""
    a, b = context.model_a, context.model_b
    return {
        scale.key: (scale.label.format(a=a, b=b), scale.description.format(a=a, b=b))
        for _, scale in page_metrics("pair")
    }


@dataclass(frozen=True)
class ModelAlternatives:
    """One model's top-k alternatives of every row, flat (token_view.Alternatives plus the ids)."""

    ids: np.ndarray  # int64
    alternatives: Alternatives

    @classmethod
    def of(cls, topk_ids: pa.ListArray, topk_probs: pa.ListArray, vocabulary: VocabularyStrings) -> ModelAlternatives:
        ids = np.asarray(topk_ids.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(ids=ids, alternatives=Alternatives.of(topk_ids, topk_probs, vocabulary))

    def rows(self, start: int, end: int) -> dict[str, Any]:
        """The alternatives of rows [start, end) as a page carries them."""
        offsets = self.alternatives.offsets
        part = self.alternatives.rows(start, end)
        return {
            "texts": part.texts.tolist(),
            "ids": self.ids[offsets[start] : offsets[end]].tolist(),
            "probs": _rounded(part.probs),
            "offsets": part.offsets.tolist(),
        }


def page_data(
    context: PairContext,
    rows: pd.DataFrame,
    alternatives: Mapping[str, dict[str, Any]] | None,
    scales: Mapping[str, float],
    initial_metric: str,
    prompt: Prompt | None = None,
    generations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The data one page carries: `rows` are one sequence of the pair table in step order with
    their readable strings (column `token`, shared_token_texts); `alternatives` maps "a" and "b"
    to ModelAlternatives.rows (None: the pair table has no alternatives); `generations` maps "a"
    and "b" to the models' generations of the prompt (generations_by_prompt)."""
    labels = metric_labels(context)
    return {
        "model_a": context.model_a,
        "model_b": context.model_b,
        "prompt_set": context.prompt_set,
        "source": context.source,
        "shared_text": context.shared_text,
        "prompt_id": str(rows["prompt_id"].iat[0]),
        "sample": int(rows["sample"].iat[0]),
        "messages": list(prompt.messages) if prompt else [],
        "answer": getattr(prompt, "answer", None) if prompt else None,
        "generations": {side: list((generations or {}).get(side, [])) for side in ("a", "b")},
        "tokens": rows["token"].tolist(),
        "token_ids": rows["token_id"].tolist(),
        "steps": rows["step"].tolist(),
        "positions": rows["position"].tolist(),
        "logprob_a": _rounded(rows["logprob_a"].to_numpy()),
        "logprob_b": _rounded(rows["logprob_b"].to_numpy()),
        "entropy_a": _rounded(rows["entropy_a"].to_numpy()),
        "entropy_b": _rounded(rows["entropy_b"].to_numpy()),
        "metrics": [
            {
                "key": key,
                "label": labels[key][0],
                "description": labels[key][1],
                "diverging": key in DIVERGING_KEYS,
                "scale_max": scales[key],
                "values": _rounded(rows[key].to_numpy()),
            }
            for key in METRIC_KEYS
        ],
        "alternatives": dict(alternatives) if alternatives is not None else None,
        "initial_metric": initial_metric,
    }


def page_template() -> str:
    """The page's HTML, CSS and script (package data: report/side_by_side.html and the shared token text)."""
    return sequence_page_template("side_by_side.html")


def page_title(data: Mapping[str, Any]) -> str:
    return (
        f"{data['model_a']} vs {data['model_b']} on {data['prompt_set']}, prompt {data['prompt_id']}, "
        f"sample {data['sample']} (shared text: {data['shared_text']})"
    )


def render_page(data: Mapping[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, JS and data)."""
    return render_sequence_page(page_template(), page_title(data), data)


def pair_summaries(con: Any, pair_sql: str) -> pa.Table:
    """One row per sequence (prompt_id, sample) of a pair table, sorted by prompt id and sample:
    n_tokens, mean_logprob_diff, mean_kl_a_b, max_kl_a_b, mean_kl_b_a (over finite values)."""
    aggregates = {
        "mean_logprob_diff": ("avg", "logprob_diff"),
        "mean_kl_a_b": ("avg", "kl_a_b"),
        "max_kl_a_b": ("max", "kl_a_b"),
        "mean_kl_b_a": ("avg", "kl_b_a"),
    }
    return summaries_by_sequence(con, pair_sql, aggregates)


def choose_pages(summaries: pa.Table, max_pages: int, listed: Sequence[str] = ()) -> np.ndarray:
    """Rows of `summaries` (pair_summaries) that get a page, in its order: at most `max_pages`
    stratified by mean KL(A ‖ B) (ties by prompt id, then sample; no finite KL ranks last), plus
    every sequence of a `listed` prompt."""
    return choose_sequences(summaries, max_pages, listed, by="mean_kl_a_b")


def pair_scales(con: Any, pair_sql: str) -> dict[str, float]:
    """Where each colouring saturates, over the whole pair table: the 99th percentile of
    |log p_B − log p_A| and of each KL (token_view's rule), so the pair's pages share one scale."""
    return {
        "logprob_diff": _scale_max(con, "abs(logprob_diff)", pair_sql),
        "kl_a_b": _scale_max(con, "kl_a_b", pair_sql),
        "kl_b_a": _scale_max(con, "kl_b_a", pair_sql),
    }


def generations_by_prompt(
    con: Any, path: str | Path | None, prompt_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Prompt id -> the model's generations of it ({sample, text, and GENERATION_FACTS present in the
    table}), samples in order; only the listed prompts are read."""
    if path is None or not prompt_ids:
        return {}
    present = set(pq.read_schema(path).names)
    columns = ["prompt_id", "sample", "text", *(c for c in GENERATION_FACTS if c in present)]
    table = con.sql(
        f"SELECT {', '.join(columns)} FROM {parquet_sql(path)} WHERE prompt_id IN ({sql_list(list(prompt_ids))}) "
        "ORDER BY prompt_id, sample"
    ).to_arrow_table()
    out: dict[str, list[dict[str, Any]]] = {}
    for record in table.to_pylist():  # one per generation of the chosen prompts (not per token)
        out.setdefault(str(record.pop("prompt_id")), []).append(record)
    return out


def shared_token_texts(rows: pd.DataFrame, starts: np.ndarray, vocabulary: VocabularyStrings) -> list[str]:
    """Readable strings of the rows' tokens (sequences begin at `starts`), as the per-token table's
    `token`: a character split over tokens shows on the token that completes it."""
    texts = vocabulary.readable(rows["token_id"].to_numpy(np.int64), starts).to_pylist()
    pieces = vocabulary.piece_array(rows["token_id"].to_numpy(np.int64)).to_pylist()
    return [text if text != "" else piece for text, piece in zip(texts, pieces, strict=True)]


@dataclass(frozen=True)
class PairRows:
    """Rows of a pair table (PAGE_COLUMNS), their ALTERNATIVE_COLUMNS in the same order (None: the
    table has none), and the models' generations of their prompts ("a" and "b" ->
    generations_by_prompt of each model)."""

    rows: pd.DataFrame
    topk: pa.Table | None = None
    generations: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]] = field(default_factory=dict)


def write_pages(
    pair_rows: PairRows,
    out_dir: str | Path,
    context: PairContext,
    inputs: ViewInputs,
    scales: Mapping[str, float],
    initial_metric: str = "logprob_diff",
) -> list[Path]:
    """One page per sequence of `pair_rows` in `out_dir`, coloured on `scales` (pair_scales),
    opening with `initial_metric` (one of METRIC_KEYS)."""
    if initial_metric not in METRIC_KEYS:
        raise ValueError(f"unknown metric {initial_metric!r}; metrics: {list(METRIC_KEYS)}")
    order, rows, starts, ends = sequences(pair_rows.rows)
    rows["token"] = shared_token_texts(rows, np.asarray(starts, dtype=np.int64), inputs.vocabulary)
    generations = pair_rows.generations
    sides: dict[str, ModelAlternatives] = {}
    if pair_rows.topk is not None:
        taken = pair_rows.topk.take(pa.array(order))
        for side in ("a", "b"):
            sides[side] = ModelAlternatives.of(
                taken.column(f"topk_ids_{side}").combine_chunks(),
                taken.column(f"topk_probs_{side}").combine_chunks(),
                inputs.vocabulary,
            )

    def page(start: int, end: int, prompt_id: str, sample: int) -> str:
        data = page_data(
            context,
            rows.iloc[start:end],
            {side: found.rows(start, end) for side, found in sides.items()} if sides else None,
            scales,
            initial_metric,
            prompt=inputs.prompts.get(prompt_id),
            generations={side: generations.get(side, {}).get(prompt_id, []) for side in ("a", "b")},
        )
        return render_page(data)

    return shared.write_pages(rows, starts, ends, out_dir, page)


@dataclass(frozen=True)
class SideBySide:
    """What build_side_by_side wrote: the pages, and the index with one row per sequence."""

    pages: list[Path]
    index: Path
    n_sequences: int


@dataclass(frozen=True)
class PairViewTables:
    """The parquet tables a side-by-side view reads: the pair table, and models A's and B's
    generations tables (None where the prompt set is not generated)."""

    pairs: str | Path
    generations_a: str | Path | None = None
    generations_b: str | Path | None = None


def build_side_by_side(
    tables: PairViewTables,
    out_dir: str | Path,
    index_path: str | Path,
    context: PairContext,
    inputs: ViewInputs,
    options: SideBySideOptions = SideBySideOptions(),
    memory_limit_mb: int | None = None,
) -> SideBySide:
    """The side-by-side pages of one pair table (models A and B on the tokens of `context.source`)
    in `out_dir` (choose_pages: at most `options.max_pages`, plus every sequence of a prompt in
    `options.prompt_ids`), opening with `options.metric`, and the index of every sequence at
    `index_path`, whose links are relative to it. Colour scales are those of the whole table;
    DuckDB gets `memory_limit_mb`."""
    pair_path = tables.pairs
    con = connect(memory_limit_mb)
    pair_sql = parquet_sql(pair_path)
    summaries = pair_summaries(con, pair_sql)
    chosen = choose_pages(summaries, options.max_pages, options.prompt_ids)
    keys = summaries.select(PAGE_KEYS).take(pa.array(chosen, type=pa.int64()))
    scales = pair_scales(con, pair_sql)
    has_alternatives = set(ALTERNATIVE_COLUMNS) <= set(pq.read_schema(pair_path).names)
    table = _chosen_rows(con, pair_sql, PAGE_COLUMNS + (ALTERNATIVE_COLUMNS if has_alternatives else []), keys)
    prompt_ids = sorted({str(p) for p in keys.column("prompt_id").to_pylist()})
    generations = {
        side: generations_by_prompt(con, path, prompt_ids)
        for side, path in (("a", tables.generations_a), ("b", tables.generations_b))
    }
    con.close()
    pages: list[Path] = []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if table.num_rows:
        rows = PairRows(
            table.select(PAGE_COLUMNS).to_pandas(),
            table.select(ALTERNATIVE_COLUMNS) if has_alternatives else None,
            generations,
        )
        pages = write_pages(rows, out, context, inputs, scales, options.metric)
    index = Path(index_path)
    write_text(
        render_index(context, summaries, {p.name for p in pages}, relative_dir(out, index), options.max_pages), index
    )
    return SideBySide(pages=pages, index=index, n_sequences=summaries.num_rows)


def render_index(
    context: PairContext, summaries: pa.Table, page_names: set[str], link_dir: str, max_pages: int | None = None
) -> str:
    """A self-contained index page (the token view's template): one row per sequence of the pair
    table (pair_summaries), linking its page where one was written."""
    title = (
        f"{context.model_a} vs {context.model_b} on {context.prompt_set} "
        f"(shared text: {context.shared_text}): every sequence"
    )
    a, b = context.model_a, context.model_b
    header = [
        ("prompt", "text"),
        ("sample", "number"),
        ("tokens", "number"),
        (f"mean log p({b}) − log p({a})", "number"),
        (f"mean KL({a} ‖ {b})", "number"),
        (f"max KL({a} ‖ {b})", "number"),
        (f"mean KL({b} ‖ {a})", "number"),
        ("page", "text"),
    ]
    cap = "side_by_side.max_pages" if max_pages is None else f"side_by_side.max_pages = {max_pages}"
    summary = (
        f"{summaries.num_rows} sequences, {len(page_names)} with a page (at most {cap}: the lowest, median and "
        "highest mean KL(A ‖ B), the rest evenly spaced in rank, plus every sequence of token_view.prompt_ids). "
        "Log-probabilities and KL in nats over the scored tokens of each sequence, both models on the same "
        "prefixes. Click a column's header to sort."
    )
    numbers = ["mean_logprob_diff", "mean_kl_a_b", "max_kl_a_b", "mean_kl_b_a"]
    return shared.render_index(title, summary, header, summaries, numbers, shared.PageLinks(page_names, link_dir), None)
