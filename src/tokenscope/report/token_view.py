"""Token view: self-contained HTML pages of chosen generations, their tokens coloured by a metric.

Researchers read generations, not only plots. Each page shows one scored sequence (a model's own
sample, or a reference answer under teacher forcing) as its tokens, each with a background whose
strength is the selected metric: entropy (default), surprisal −log p of the token, varentropy,
margin (log p of the top token minus the second's), or the per-token KL against another model where
a pair table scored the same tokens. Hovering a token
shows its probability, rank, entropy, the other metrics and the top-k alternatives; a selector
switches the metric. The page carries its data inline and loads nothing (no network), so it works
inside Snakemake's report, opened from disk, and offline.

At research scale not every sequence gets a page (report.selection chooses at most
`token_view.max_pages` per model and token source, plus listed prompts); an index page lists every
sequence with its summary and links the pages that exist. build_token_view reads the per-token and
pair tables through DuckDB: the summaries and colour scales are aggregates, and only the chosen
sequences' rows (with their top-k lists) are read into memory.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tokenscope.duckdb_tables import connect, parquet_sql, sql_list
from tokenscope.inputs.prompts import Prompt
from tokenscope.io import write_text
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.options import TokenViewOptions
from tokenscope.report.pages import (
    PageLinks,
    ViewInputs,
    relative_dir,
    render_sequence_page,
    sequence_page_template,
    sequences,
    write_pages,
)
from tokenscope.report.pages import page_file_name as page_file_name  # re-exported (tests, file names)
from tokenscope.report.pages import render_index as render_index_page
from tokenscope.report.selection import choose_sequences, sequence_summaries
from tokenscope.scoring.catalogue import PageScale, page_expression, page_metrics

TOKEN_KEYS = ["prompt_id", "sample", "position"]
# Colours saturate at this quantile of a metric over the whole token file, so that one extreme
# token does not wash out the rest and pages of one file share a scale.
SCALE_QUANTILE = 0.99
# The metrics of the token table a page can be coloured by (token_metrics): key -> SQL expression
TOKEN_METRICS = {scale.key: page_expression(metric, scale) for metric, scale in page_metrics("generated")}
# The per-token columns a page shows
PAGE_COLUMNS = [
    "prompt_id",
    "sample",
    "step",
    "position",
    "token",
    "token_id",
    "entropy",
    "varentropy",
    "margin",
    "logprob",
    "prob",
    "rank",
    "topk_ids",
    "topk_probs",
]


@dataclass(frozen=True)
class PageMetric:
    """A per-token quantity a page can be coloured by."""

    key: str
    label: str
    description: str
    values: np.ndarray  # float64, aligned with the token rows; +inf allowed (KL), NaN = not scored
    unit: str = "nats"

    @property
    def scale_max(self) -> float:
        finite = self.values[np.isfinite(self.values)]
        if finite.size == 0:
            return 1.0
        top = float(np.quantile(finite, SCALE_QUANTILE))
        return top if top > 0 else max(float(finite.max()), 1e-6)


@dataclass(frozen=True)
class PairScores:
    """A pair table that scored the same tokens, and which side of it the page's model is."""

    other: str
    pairs: pd.DataFrame
    model_is_a: bool

    @classmethod
    def of(cls, pairs: pd.DataFrame, model: str) -> PairScores:
        """`pairs` of (model_a, model_b) seen from `model`, one of the two."""
        model_a, model_b = pairs["model_a"].iat[0], pairs["model_b"].iat[0]
        if model not in (model_a, model_b):
            raise ValueError(f"pair table of {model_a} and {model_b} does not include {model}")
        return cls(other=model_b if model == model_a else model_a, pairs=pairs, model_is_a=model == model_a)

    def kl_from_model(self) -> pd.Series:
        """KL(model ‖ other) per token, indexed by TOKEN_KEYS."""
        column = "kl_a_b" if self.model_is_a else "kl_b_a"
        return self.pairs.set_index(TOKEN_KEYS)[column]


def _page_values(values: np.ndarray, scale: PageScale) -> np.ndarray:
    return -values if scale.negate else values


def token_metrics(tokens: pd.DataFrame, model: str, pair_scores: Sequence[PairScores]) -> list[PageMetric]:
    """The metrics of a token file: entropy, surprisal, varentropy, margin, and KL(model ‖ other)
    per pair table (TOKEN_METRICS: their keys, as build_token_view computes their scales)."""
    metrics = [
        PageMetric(
            scale.key,
            scale.label,
            scale.description,
            _page_values(tokens[metric.name].to_numpy(np.float64), scale),
            unit=metric.unit,
        )
        for metric, scale in page_metrics("generated")
    ]
    index = pd.MultiIndex.from_frame(tokens[TOKEN_KEYS])
    for scores in pair_scores:
        kl = scores.kl_from_model().reindex(index).to_numpy(np.float64)
        metrics.append(
            PageMetric(
                f"kl:{scores.other}",
                f"KL({model} ‖ {scores.other})",
                f"KL divergence (nats) from {model}'s next-token distribution to {scores.other}'s",
                kl,
            )
        )
    return metrics


@dataclass(frozen=True)
class Alternatives:
    """The top-k alternatives of every token row, flat: row i owns [offsets[i], offsets[i + 1])."""

    texts: np.ndarray  # object (str): readable text, or the raw piece of a partial character
    probs: np.ndarray  # float64
    offsets: np.ndarray  # int64 [rows + 1]

    @classmethod
    def of(cls, topk_ids: pa.ListArray, topk_probs: pa.ListArray, table: VocabularyStrings) -> Alternatives:
        flat = np.asarray(topk_ids.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        unique, inverse = np.unique(flat, return_inverse=True)
        readable = np.asarray(table.readable(unique, np.arange(unique.size)).to_pylist(), dtype=object)
        pieces = np.asarray(table.piece_array(unique).to_pylist(), dtype=object)
        texts = np.where(readable == "", pieces, readable)[inverse]
        probs = np.asarray(topk_probs.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        offsets = np.asarray(topk_ids.offsets.to_numpy(), dtype=np.int64) - int(topk_ids.offsets[0].as_py())
        return cls(texts=texts, probs=probs, offsets=offsets)

    def rows(self, start: int, end: int) -> Alternatives:
        first, last = self.offsets[start], self.offsets[end]
        return Alternatives(self.texts[first:last], self.probs[first:last], self.offsets[start : end + 1] - first)


def _rounded(values: np.ndarray, digits: int = 6) -> list[float]:
    """Values for the page: 6 significant digits keep pages small; inf stays inf (JS Infinity)."""
    out = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(out) & (out != 0)
    scale = np.where(finite, 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(finite, out, 1.0))))), 1.0)
    return (np.round(out * scale) / scale).tolist()


@dataclass(frozen=True)
class PageContext:
    """What a page says about where its tokens come from."""

    model: str
    prompt_set: str
    source: str  # the generating model, or "reference"
    prompt: Prompt | None = None
    finish_reason: str | None = None


def page_data(
    context: PageContext,
    tokens: pd.DataFrame,
    metrics: Sequence[PageMetric],
    alternatives: Alternatives,
    scales: Mapping[str, float],
    initial_metric: str,
) -> dict[str, Any]:
    """The data one page carries: the rows of one sequence, in step order; `initial_metric` is a metric key."""
    prompt = context.prompt
    insertion = prompt.insertion if prompt else None
    return {
        "model": context.model,
        "prompt_set": context.prompt_set,
        "source": context.source,
        "prompt_id": str(tokens["prompt_id"].iat[0]),
        "sample": int(tokens["sample"].iat[0]),
        "finish_reason": context.finish_reason,
        "messages": list(prompt.messages) if prompt else [],
        "insertion": (
            {"text": insertion.text, "token": insertion.token, "count": insertion.count, "place": insertion.place}
            if insertion
            else None
        ),
        "tokens": tokens["token"].tolist(),
        "token_ids": tokens["token_id"].tolist(),
        "steps": tokens["step"].tolist(),
        "positions": tokens["position"].tolist(),
        "prob": _rounded(tokens["prob"].to_numpy()),
        "logprob": _rounded(tokens["logprob"].to_numpy()),
        "rank": tokens["rank"].tolist(),
        "alternatives": alternatives.texts.tolist(),
        "alternative_probs": _rounded(alternatives.probs),
        "alternative_offsets": alternatives.offsets.tolist(),
        "metrics": [
            {
                "key": m.key,
                "label": m.label,
                "description": m.description,
                "scale_max": scales[m.key],
                "unit": m.unit,
                "values": _rounded(m.values),
            }
            for m in metrics
        ],
        "initial_metric": initial_metric,
    }


def render_page(data: Mapping[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, JS and data) for one sequence."""
    tokens = "reference answer" if data["source"] == "reference" else f"{data['source']}'s generation"
    title = f"{data['model']} on {data['prompt_set']}, prompt {data['prompt_id']}, sample {data['sample']} ({tokens})"
    return render_sequence_page(page_template(), title, data)


def page_template() -> str:
    """The page's HTML, CSS and script (package data: report/token_view.html and the shared token text)."""
    return sequence_page_template("token_view.html")


def initial_metric_key(name: str, metrics: Sequence[PageMetric]) -> str:
    """Config `token_view.metric` (entropy, surprisal, varentropy, margin or kl) -> the key of the
    metric a page opens with."""
    if name == "kl":
        return next((m.key for m in metrics if m.key.startswith("kl:")), "entropy")
    return name


@dataclass(frozen=True)
class TokenRows:
    """Rows of a per-token table (PAGE_COLUMNS but the top-k lists) with their top-k alternatives
    (one list per row), the pair tables that scored the same tokens, and the generations' finish
    reasons by (prompt_id, sample) (none for reference answers)."""

    tokens: pd.DataFrame
    topk_ids: pa.ListArray
    topk_probs: pa.ListArray
    pair_scores: Sequence[PairScores] = ()
    finish_reasons: Mapping[tuple[str, int], str] = field(default_factory=dict)


def write_token_views(
    rows: TokenRows,
    out_dir: str | Path,
    context: PageContext,
    inputs: ViewInputs,
    initial_metric: str = "entropy",
    scales: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write one page per sequence of a per-token table's `rows` into `out_dir`; return their paths.

    Every page of the table shares one colour scale per metric: `scales` (metric key -> the value
    where colours saturate; build_token_view passes those of the whole tables), else the metric's
    SCALE_QUANTILE quantile over the rows.
    """
    if not len(rows.tokens) == len(rows.topk_ids) == len(rows.topk_probs):
        raise ValueError("topk_ids and topk_probs must have one entry per token row")
    order, tokens, starts, ends = sequences(rows.tokens)
    take = pa.array(order)
    alternatives = Alternatives.of(rows.topk_ids.take(take), rows.topk_probs.take(take), inputs.vocabulary)
    metrics = token_metrics(tokens, context.model, rows.pair_scores)
    page_scales = {m.key: (scales[m.key] if scales and m.key in scales else m.scale_max) for m in metrics}
    opening = initial_metric_key(initial_metric, metrics)

    def page(start: int, end: int, prompt_id: str, sample: int) -> str:
        page_context = replace(
            context,
            prompt=inputs.prompts.get(prompt_id),
            finish_reason=rows.finish_reasons.get((prompt_id, sample)),
        )
        page_metrics = [replace(m, values=m.values[start:end]) for m in metrics]
        return render_page(
            page_data(
                page_context, tokens.iloc[start:end], page_metrics, alternatives.rows(start, end), page_scales, opening
            )
        )

    return write_pages(tokens, starts, ends, out_dir, page)


def _scale_max(con: Any, expression: str, source: str) -> float:
    """PageMetric.scale_max computed in DuckDB over a whole table: the SCALE_QUANTILE quantile of
    the finite values (linear interpolation, as numpy's), else their maximum, else 1."""
    value = f"({expression})::DOUBLE"
    [(top, largest, count)] = con.sql(
        f"SELECT quantile_cont({value}, {SCALE_QUANTILE}) FILTER (WHERE isfinite({value})), "
        f"max({value}) FILTER (WHERE isfinite({value})), count(*) FILTER (WHERE isfinite({value})) FROM {source}"
    ).fetchall()
    if not count:
        return 1.0
    return float(top) if top > 0 else max(float(largest), 1e-6)


def _chosen_rows(con: Any, source: str, columns: Sequence[str], keys: pa.Table) -> pa.Table:
    """`columns` of the rows of `source` whose (prompt_id, sample) is in `keys`: the prompt ids are
    pushed into the parquet scan (row groups without them are skipped), the pairs semi-joined."""
    if keys.num_rows == 0:
        return con.sql(f"SELECT {', '.join(columns)} FROM {source} LIMIT 0").to_arrow_table()
    con.register("chosen_keys", keys)
    try:
        selected = ", ".join(f"t.{c}" for c in columns)
        prompt_ids = sql_list(sorted(set(keys.column("prompt_id").to_pylist())))
        return con.sql(
            f"SELECT {selected} FROM {source} AS t "
            f"SEMI JOIN chosen_keys AS c ON t.prompt_id = c.prompt_id AND t.sample = c.sample "
            f"WHERE t.prompt_id IN ({prompt_ids})"
        ).to_arrow_table()
    finally:
        con.unregister("chosen_keys")


@dataclass(frozen=True)
class TokenView:
    """What build_token_view wrote: the pages, and the index with one row per sequence."""

    pages: list[Path]
    index: Path
    n_sequences: int


@dataclass(frozen=True)
class TokenViewTables:
    """The parquet tables a token view reads: the per-token table (one file or several), the pair
    tables that scored the same tokens, and the generations table (None for reference answers)."""

    tokens: str | Path | Sequence[str | Path]
    pairs: Sequence[str | Path] = ()
    generations: str | Path | None = None


def build_token_view(
    tables: TokenViewTables,
    out_dir: str | Path,
    index_path: str | Path,
    context: PageContext,
    inputs: ViewInputs,
    options: TokenViewOptions = TokenViewOptions(),
    memory_limit_mb: int | None = None,
) -> TokenView:
    """The token view of one model on one token source: pages of the chosen sequences in `out_dir`
    (report.selection.choose_sequences: at most `options.max_pages`, plus every sequence of a
    prompt in `options.prompt_ids`), opening with `options.metric`, and the index of every sequence
    at `index_path`, whose links are relative to it.

    Colour scales are those of the whole tables (every sequence, chosen or not); the rows of the
    chosen sequences are the only ones read into memory. DuckDB gets `memory_limit_mb`.
    """
    con = connect(memory_limit_mb)
    tokens_sql = parquet_sql(tables.tokens)
    summaries = sequence_summaries(con, tables.tokens)
    chosen = choose_sequences(summaries, options.max_pages, options.prompt_ids)
    keys = summaries.select(["prompt_id", "sample"]).take(pa.array(chosen, type=pa.int64()))
    scales = {key: _scale_max(con, expression, tokens_sql) for key, expression in TOKEN_METRICS.items()}
    pair_scores = []
    for path in tables.pairs:
        pair_sql = parquet_sql(path)
        model_a, model_b = (con.sql(f"SELECT model_a, model_b FROM {pair_sql} LIMIT 1").fetchall() or [(None, None)])[0]
        if model_a is None:  # an empty pair table: no tokens to colour
            continue
        if context.model not in (model_a, model_b):
            raise ValueError(f"pair table {path} of {model_a} and {model_b} does not include {context.model}")
        column = "kl_a_b" if context.model == model_a else "kl_b_a"
        rows = _chosen_rows(con, pair_sql, [*TOKEN_KEYS, column], keys).to_pandas()
        scores = PairScores(
            other=model_b if context.model == model_a else model_a, pairs=rows, model_is_a=context.model == model_a
        )
        scales[f"kl:{scores.other}"] = _scale_max(con, column, pair_sql)
        pair_scores.append(scores)
    finish_reasons: dict[tuple[str, int], str] = {}
    if tables.generations is not None:
        reasons = con.sql(
            f"SELECT prompt_id, sample, finish_reason FROM {parquet_sql(tables.generations)}"
        ).to_arrow_table()
        finish_reasons = dict(
            zip(
                zip(reasons.column("prompt_id").to_pylist(), reasons.column("sample").to_pylist(), strict=True),
                reasons.column("finish_reason").to_pylist(),
                strict=True,
            )
        )
    table = _chosen_rows(con, tokens_sql, PAGE_COLUMNS, keys)
    con.close()
    pages: list[Path] = []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if table.num_rows:
        frame = table.drop_columns(["topk_ids", "topk_probs"]).to_pandas()
        rows = TokenRows(
            frame,
            table.column("topk_ids").combine_chunks(),
            table.column("topk_probs").combine_chunks(),
            pair_scores=pair_scores,
            finish_reasons=finish_reasons,
        )
        pages = write_token_views(rows, out, context, inputs, initial_metric=options.metric, scales=scales)
    index = Path(index_path)
    page_names = {p.name for p in pages}
    write_text(
        render_index(
            context,
            summaries,
            finish_reasons if tables.generations is not None else None,
            page_names,
            relative_dir(out, index),
        ),
        index,
    )
    return TokenView(pages=pages, index=index, n_sequences=summaries.num_rows)


def render_index(
    context: PageContext,
    summaries: pa.Table,
    finish_reasons: Mapping[tuple[str, int], str] | None,
    page_names: set[str],
    link_dir: str,
) -> str:
    """A self-contained index page: one table row per sequence (sequence_summaries), its summary,
    finish reason (generations only) and a link to its page where one was written."""
    tokens = "reference answers" if context.source == "reference" else f"{context.source}'s generations"
    title = f"Token view of {context.model} on {context.prompt_set} ({tokens}): every sequence"
    header = [
        ("prompt", "text"),
        ("sample", "number"),
        ("tokens", "number"),
        ("mean entropy", "number"),
        ("max entropy", "number"),
        ("mean surprisal", "number"),
        ("max surprisal", "number"),
        *([("finish", "text")] if finish_reasons is not None else []),
        ("page", "text"),
    ]
    finish = None
    if finish_reasons is not None:
        keys = zip(summaries.column("prompt_id").to_pylist(), summaries.column("sample").to_pylist(), strict=True)
        finish = (f"<td>{html.escape(str(finish_reasons.get(key) or ''))}</td>" for key in keys)
    summary = (
        f"{summaries.num_rows} sequences, {len(page_names)} with a page (the others have no page: "
        "token_view.max_pages and token_view.prompt_ids choose them). Entropy and surprisal (−log p of "
        "the token) in nats, over the scored tokens of each sequence. Click a column's header to sort."
    )
    numbers = ["mean_entropy", "max_entropy", "mean_surprisal", "max_surprisal"]
    return render_index_page(title, summary, header, summaries, numbers, PageLinks(page_names, link_dir), finish)
