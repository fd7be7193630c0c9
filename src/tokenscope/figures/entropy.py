"""Entropy figures: entropy per generation step (a panel per model) and entropy histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

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


def plot_entropy_hist(tokens: pd.DataFrame, title: str, bins: int = 30, hue: str = "model") -> Figure:
    """Overlaid entropy histograms, one per value of `hue`: density=True, log y, alpha 0.7.

    The bin edges are computed once from all values, so the histograms are comparable. The
    legend names each `hue` value (the models by default) with its number of tokens.
    """
    values = tokens["entropy"].astype("float64")
    finite = np.isfinite(values.to_numpy())
    with figure_style():
        fig = Figure(figsize=(9, 5), layout="constrained")
        ax = fig.subplots()
        if finite.any():
            edges = np.histogram_bin_edges(values[finite], bins=bins)
            names = tokens[hue].astype(str)
            colors = sns.color_palette("deep", names.nunique())
            for color, name in zip(colors, _models_in_order(tokens, hue), strict=True):
                x = values[(names == name).to_numpy() & finite].to_numpy()
                if len(x):
                    # matplotlib's stubs leave ndarray out of `bins` (it takes any sequence of edges)
                    ax.hist(x, bins=edges, density=True, log=True, alpha=0.7, color=color, label=f"{name} (n={len(x)})")  # type: ignore[arg-type]
            literal(ax.legend(title=hue))
        else:
            ax.text(0.5, 0.5, "no finite entropy values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(ENTROPY_LABEL)
        ax.set_ylabel(DENSITY_LABEL)
        literal(ax.set_title(title))
    return fig
