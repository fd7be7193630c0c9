"""Entropy figures: entropy per generation step (a panel per model) and entropy histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tokenscope.duckdb_tables import parquet_sql
from tokenscope.figures.style import ENTROPY_LABEL, figure_style, literal

STEP_LABEL = "Generation step (token index)"
DENSITY_LABEL = "Density (log scale)"
# above this many lines per panel, lines get thinner and the sample legend is left out
MANY_SAMPLES = 5
MAX_LEGEND_SAMPLES = 10


def _models_in_order(tokens: pd.DataFrame, column: str = "model") -> list[str]:
    return list(dict.fromkeys(tokens[column].astype(str)))


def plot_entropy_per_step(tokens: pd.DataFrame, title: str, models: list[str] | None = None) -> Figure:
    """Entropy per generation step of one prompt: one panel per model, stacked, shared x axis.

    One '-o' line per sample (and per source, when a model has several). `models` fixes the
    panels and their order, so that figures of different prompts line up; a model without
    tokens for this prompt gets an empty panel that says so. Defaults to the models present.
    """
    models = list(models) if models is not None else _models_in_order(tokens)
    if not models:
        raise ValueError("no models to plot")
    n = len(models)
    with figure_style():
        fig = Figure(figsize=(10, 1.0 + 2.6 * n), layout="constrained")
        axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
        model_names = tokens["model"].astype(str)
        for ax, model in zip(axes, models, strict=True):
            rows = tokens[model_names == str(model)]
            literal(ax.set_title(str(model)))
            ax.set_ylabel(ENTROPY_LABEL)
            if rows.empty:
                literal(
                    ax.text(
                        0.5,
                        0.5,
                        f"no tokens from {model} for this prompt",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                    )
                )
                continue
            line_keys = ["source", "sample"] if "source" in rows and rows["source"].nunique() > 1 else ["sample"]
            lines = list(rows.sort_values([*line_keys, "step"], kind="stable").groupby(line_keys, sort=True))
            many = len(lines) > MANY_SAMPLES
            colors = sns.color_palette("viridis" if many else "deep", len(lines))
            for color, (key, line) in zip(colors, lines, strict=True):
                key = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{k} {v}" for k, v in zip(line_keys, key, strict=True))
                ax.plot(
                    line["step"].to_numpy(),
                    line["entropy"].to_numpy(),
                    "-o",
                    color=color,
                    label=label,
                    linewidth=0.8 if many else 1.4,
                    markersize=2 if many else 3.5,
                    alpha=0.8 if many else 1.0,
                )
            if 1 < len(lines) <= MAX_LEGEND_SAMPLES:
                literal(ax.legend(fontsize="x-small", loc="upper right", ncols=min(len(lines), 5)))
        axes[-1].set_xlabel(STEP_LABEL)
        literal(fig.suptitle(title))
    return fig


@dataclass(frozen=True)
class EntropyHistograms:
    """Entropy histograms on shared bins: counts[name] has one count per bin (len(edges) - 1)."""

    edges: np.ndarray
    counts: dict[str, np.ndarray]


def entropy_histograms(tokens: pd.DataFrame, bins: int = 30, hue: str = "model") -> EntropyHistograms:
    """The histograms plot_entropy_hist draws, of an in-memory frame (numpy's bins over all finite values)."""
    values = tokens["entropy"].to_numpy(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return EntropyHistograms(np.zeros(0), {})
    edges = np.histogram_bin_edges(values[finite], bins=bins)
    names = tokens[hue].astype(str).to_numpy()
    return EntropyHistograms(
        edges,
        {name: np.histogram(values[finite & (names == name)], bins=edges)[0] for name in _models_in_order(tokens, hue)},
    )


def entropy_histograms_of_files(
    con: duckdb.DuckDBPyConnection, files: Mapping[str, str | Path | Sequence[str | Path]], bins: int = 50
) -> EntropyHistograms:
    """Entropy histograms of per-token parquet tables (name -> files), counted in DuckDB.

    The bins are numpy's for `bins` equal bins over the finite values of all tables (min to max;
    max ± 0.5 when all values are equal), so the counts equal np.histogram's on the same values;
    only the counts (a few hundred numbers) reach Python.
    """
    sources = {name: parquet_sql(paths) for name, paths in files.items()}
    ranges = [
        con.sql(f"SELECT min(entropy::DOUBLE), max(entropy::DOUBLE) FROM {sql} WHERE isfinite(entropy)").fetchall()[0]
        for sql in sources.values()
    ]
    found = [(lo, hi) for lo, hi in (r or (None, None) for r in ranges) if lo is not None]
    if not found:
        return EntropyHistograms(np.zeros(0), {})
    low, high = min(lo for lo, _ in found), max(hi for _, hi in found)
    edges = np.histogram_bin_edges(np.array([low, high]), bins=bins)
    first, norm = float(edges[0]), bins / (float(edges[-1]) - float(edges[0]))
    edge_list = "([" + ", ".join(repr(float(e)) for e in edges) + "]::DOUBLE[])"
    counts = {}
    for name, sql in sources.items():
        # numpy's rule (np.histogram with equal bins): index (x - first) * norm, the last edge in the
        # last bin, then moved by one where rounding put x on the wrong side of its edge.
        rows = con.sql(
            f"""
            WITH v AS (SELECT entropy::DOUBLE AS x FROM {sql} WHERE isfinite(entropy)),
                 a AS (SELECT x, least(CAST(trunc((x - {first!r}) * {norm!r}) AS BIGINT), {bins - 1}) AS i FROM v),
                 b AS (SELECT x, CASE WHEN x < {edge_list}[i + 1] THEN i - 1 ELSE i END AS i FROM a),
                 c AS (SELECT CASE WHEN x >= {edge_list}[i + 2] AND i != {bins - 1} THEN i + 1 ELSE i END AS i FROM b)
            SELECT i, count(*) FROM c GROUP BY i
            """
        ).fetchall()
        binned = np.zeros(bins, dtype=np.int64)
        for index, count in rows:
            binned[int(index)] += int(count)
        counts[name] = binned
    return EntropyHistograms(edges, counts)


def plot_entropy_hist(tokens: pd.DataFrame, title: str, bins: int = 30, hue: str = "model") -> Figure:
    """Overlaid entropy histograms, one per value of `hue`: density=True, log y, alpha 0.7.

    The bin edges are computed once from all values, so the histograms are comparable. The
    legend names each `hue` value (the models by default) with its number of tokens.
    """
    return plot_entropy_histograms(entropy_histograms(tokens, bins, hue), title, hue)


def plot_entropy_histograms(histograms: EntropyHistograms, title: str, hue: str = "model") -> Figure:
    """plot_entropy_hist drawn from counts (entropy_histograms, entropy_histograms_of_files): one
    bar histogram per name, density=True, log y, alpha 0.7, the legend naming each with its count."""
    edges = histograms.edges
    with figure_style():
        fig = Figure(figsize=(9, 5), layout="constrained")
        ax = fig.subplots()
        if len(edges):
            centres = (edges[:-1] + edges[1:]) / 2
            colors = sns.color_palette("deep", len(histograms.counts))
            for color, (name, counts) in zip(colors, histograms.counts.items(), strict=True):
                n = int(counts.sum())
                if n:
                    # one weighted value per bin, at its centre: the bars of the counts
                    # (matplotlib's stubs leave ndarray out of `bins`: it takes any sequence of edges)
                    ax.hist(
                        centres,
                        bins=edges,  # type: ignore[arg-type]
                        weights=counts,
                        density=True,
                        log=True,
                        alpha=0.7,
                        color=color,
                        label=f"{name} (n={n})",
                    )
            literal(ax.legend(title=hue))
        else:
            ax.text(0.5, 0.5, "no finite entropy values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(ENTROPY_LABEL)
        ax.set_ylabel(DENSITY_LABEL)
        literal(ax.set_title(title))
    return fig


def files_by_model(con: duckdb.DuckDBPyConnection, paths: Sequence[str | Path]) -> dict[str, str]:
    """Per-token tables (one per model, in the group's order) -> {model name: file}; a table
    without rows is named by its folder (results/tokens/{prompt_set}/{model}/{source}.parquet)."""
    named = {}
    for path in paths:
        rows = con.sql(f"SELECT model FROM {parquet_sql(path)} LIMIT 1").fetchall()
        named[str(rows[0][0]) if rows else Path(path).parent.name] = str(path)
    return named
