"""Checkpoint-comparison figures: trend of each measure against the checkpoint index."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tokenscope.figures.style import figure_style, literal

TREND_MEASURES = {
    "mean_entropy": "Mean entropy (nats)",
    "p90_entropy": "p90 entropy (nats)",
    "p99_entropy": "p99 entropy (nats)",
    "share_above_base_p80": "Share above base p80 entropy",
    "mean_kl_base_model": "KL(base ‖ checkpoint), nats",
    "high_entropy_overlap": "Overlap of top-20% entropy positions with base",
}


def plot_trends(trends: pd.DataFrame, title: str) -> Figure:
    """Each measure against checkpoint index (base = 0), estimate with its CI band, a line per token source."""
    measures = [m for m in TREND_MEASURES if m in set(trends["measure"])]
    columns = 3
    rows = -(-len(measures) // columns)
    with figure_style():
        fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        sources = list(dict.fromkeys(trends["tokens"]))
        colors = dict(zip(sources, sns.color_palette("deep", len(sources)), strict=True))
        for ax, measure in zip(axes, measures, strict=False):
            for source in sources:
                line = trends[(trends["measure"] == measure) & (trends["tokens"] == source)].sort_values("checkpoint")
                if line.empty:
                    continue
                x = line["checkpoint"].to_numpy()
                ax.plot(x, line["estimate"], "-o", color=colors[source], label=source, markersize=4)
                ax.fill_between(x, line["ci_low"], line["ci_high"], color=colors[source], alpha=0.2, linewidth=0)
            ax.set_title(TREND_MEASURES[measure], fontsize="medium")
            ax.set_xlabel("Checkpoint (0 = base)")
            ax.set_xticks(sorted(set(trends["checkpoint"])))
        for ax in axes[len(measures) :]:
            ax.set_visible(False)
        literal(axes[0].legend(fontsize="small"))
        literal(fig.suptitle(title))
    return fig
