"""Figures of the internals analyses.

Marker attention: (a) entropy and (b) attention to marker tokens per generation step.
Filler attention: attention received per position with vs without inserted tokens.
Depth convergence: hidden-state distance to the final state, heatmap of depth x token chunks
(log colour scale).
Logit lens: heatmap of prediction entropy over layers x positions with the top-1 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tokenscope.figures.style import ENTROPY_LABEL, figure_style, literal

SPAN_COLOR = "#9fd89f"  # light green: the shaded span of inserted tokens
REGION_COLOR = "#2ca02c"


def _short(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_marker_attention(
    frame: pd.DataFrame, markers: Sequence[str], title: str, condition: str = "condition"
) -> Figure:
    """Marker attention: mean over sequences per generation step, band = ±1 standard deviation.

    `frame` has columns step, entropy, marker_share and `condition` (one line per value), and
    n_marker_tokens: where that is 0 throughout a condition's sequences, the markers never occur
    there (their attention share is 0 by construction) and panel (b) says so.
    """
    marker_text = ", ".join(markers)
    absent = markers_absent(frame, condition)
    with figure_style():
        fig = Figure(figsize=(9, 6.5), layout="constrained")
        ax_entropy, ax_share = fig.subplots(2, 1, sharex=True)
        conditions = list(dict.fromkeys(frame[condition].astype(str)))
        colors = sns.color_palette("tab10", len(conditions))
        for color, name in zip(colors, conditions, strict=True):
            rows = frame[frame[condition].astype(str) == name]
            stats = rows.groupby("step")[["entropy", "marker_share"]].agg(["mean", "std", "count"])
            steps = stats.index.to_numpy()
            n = stats[("entropy", "count")].max()
            for ax, column in ((ax_entropy, "entropy"), (ax_share, "marker_share")):
                mean = stats[(column, "mean")].to_numpy()
                spread = np.nan_to_num(stats[(column, "std")].to_numpy())
                ax.plot(steps, mean, color=color, linewidth=1.4, label=f"{name} (n={n})")
                ax.fill_between(steps, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0)
        ax_entropy.set_title("(a) Entropy")
        ax_entropy.set_ylabel(ENTROPY_LABEL)
        ax_share.set_title(f"(b) Attention to {marker_text} tokens")
        ax_share.set_ylabel("Attention proportion")
        ax_share.set_xlabel("Generation step")
        ax_entropy.set_ylim(bottom=0)
        ax_share.set_ylim(bottom=0)
        literal(ax_share.title)
        for ax in (ax_entropy, ax_share):
            literal(ax.legend(loc="upper left", fontsize="small"))
        if absent:
            where = "these sequences" if absent == conditions else f"the sequences of {', '.join(absent)}"
            note = f"marker(s) {marker_text} never occur in {where}"
            literal(ax_share.text(0.5, 0.5, note, ha="center", va="center", transform=ax_share.transAxes))
        literal(fig.suptitle(title))
    return fig


def markers_absent(frame: pd.DataFrame, condition: str = "condition") -> list[str]:
    """The values of `condition` (in order) in whose sequences no marker token occurs."""
    if "n_marker_tokens" not in frame or frame.empty:
        return []
    seen = frame.groupby(frame[condition].astype(str), sort=False)["n_marker_tokens"].max()
    return [str(name) for name, count in seen.items() if count == 0]


def plot_attention_positions(with_filler: pd.DataFrame, without: pd.DataFrame, title: str, margin: int = 8) -> Figure:
    """Filler attention: per (layer, head) a column of two panels, the whole sequence and a zoom
    on the inserted span (shaded). x is the position in the sequence with inserted tokens; the
    sequence without them is drawn at the positions its tokens have there (aligned around the span)."""
    pairs = list(dict.fromkeys(zip(with_filler["layer"], with_filler["head"], strict=True)))
    span = with_filler.loc[with_filler["in_span"], "position"]
    start, end = (int(span.min()), int(span.max()) + 1) if len(span) else (0, 0)
    colors = {"without": "#e4572e", "with": "#17a398"}
    with figure_style():
        fig = Figure(figsize=(4.6 * len(pairs), 6.5), layout="constrained")
        axes = fig.subplots(2, len(pairs), squeeze=False)
        for column, (layer, head) in enumerate(pairs):
            w = with_filler[(with_filler["layer"] == layer) & (with_filler["head"] == head)].sort_values("position")
            wo = without[(without["layer"] == layer) & (without["head"] == head)].sort_values("position")
            wo_x = np.where(wo["position"] < start, wo["position"], wo["position"] + (end - start)).astype(float)
            wo_y = wo["attention_received"].to_numpy(dtype=float)
            if end > start:  # break the line over the span the sequence without insertion does not have
                cut = int(np.searchsorted(wo_x, start))
                wo_x, wo_y = np.insert(wo_x, cut, np.nan), np.insert(wo_y, cut, np.nan)
            for row, ax in enumerate(axes[:, column]):
                ax.plot(wo_x, wo_y, color=colors["without"], linewidth=1.2, label="w/o inserted tokens")
                ax.plot(
                    w["position"],
                    w["attention_received"],
                    color=colors["with"],
                    linewidth=1.2,
                    label="w/ inserted tokens",
                )
                if end > start:
                    ax.axvspan(
                        start - 0.5, end - 0.5, color=SPAN_COLOR, alpha=0.5, linewidth=0, label="inserted tokens"
                    )
                if row == 1 and end > start:
                    ax.set_xlim(max(start - margin, 0) - 0.5, end + margin - 0.5)
                ax.set_ylim(bottom=0)
                ax.set_xlabel("Tokens (position with inserted tokens)")
                ax.set_ylabel("Average attention weight")
            axes[0, column].set_title(f"Layer {layer}, Head {head}")
            axes[1, column].set_title(f"Layer {layer}, Head {head}: inserted span")
        literal(axes[0, 0].legend(loc="upper right", fontsize="small"))
        literal(fig.suptitle(title))
    return fig


def chunk_labels(tokens: Sequence[str], chunk_tokens: int, width: int = 40) -> list[str]:
    return [
        _short("".join(tokens[i : i + chunk_tokens]).strip() or "␣", width) for i in range(0, len(tokens), chunk_tokens)
    ]


def plot_convergence(frame: pd.DataFrame, title: str, chunk_tokens: int = 4, max_rows: int = 48) -> Figure:
    """Depth convergence: ||x_s - x_final|| averaged over chunks of `chunk_tokens` tokens; rows are
    chunks (their text as labels), columns are depth steps (layers or iterations), log colour scale.

    The last depth step is the reference (distance 0) and is left out. With more than
    `max_rows` chunks, the last `max_rows` are shown.
    """
    kind = str(frame["depth_kind"].iloc[0])
    steps = int(frame["depth"].max())
    frame = frame[frame["depth"] < steps]
    grid = frame.pivot_table(index="position", columns="depth", values="distance", aggfunc="mean").sort_index()
    tokens = frame.drop_duplicates("position").sort_values("position")["token"].tolist()
    chunk = np.arange(len(grid)) // chunk_tokens
    values = grid.groupby(chunk).mean().to_numpy()
    labels = chunk_labels(tokens, chunk_tokens)
    values, labels = values[-max_rows:], labels[-max_rows:]
    positive = values[values > 0]
    with figure_style():
        fig = Figure(figsize=(10, 1.5 + 0.28 * len(labels)), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(
            np.where(values > 0, values, np.nan),
            aspect="auto",
            cmap="viridis",
            norm=LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None,
            interpolation="nearest",
        )
        literal(ax.set_yticks(range(len(labels)), labels, fontsize="x-small"))
        ax.set_xlabel("Iterations at test time" if kind == "iteration" else "Layer")
        ax.set_ylabel(f"Tokens ({chunk_tokens} per row)")
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="Distance ||x - x*|| (log scale)")
        literal(ax.set_title(title))
    return fig


def plot_logit_lens(frame: pd.DataFrame, title: str, max_positions: int = 40, label_width: int = 7) -> Figure:
    """Logit lens: entropy (nats) of the lens distribution, layers (rows, first at the bottom) x
    positions (columns, labelled with the input token), top-1 predicted token in each cell.

    Shows `max_positions` positions: those around the inserted span when there is one, else the
    last ones. The span is outlined.
    """
    grid = frame.pivot_table(index="layer", columns="position", values="entropy", aggfunc="first")
    top = frame.pivot_table(index="layer", columns="position", values="top_token", aggfunc="first")
    tokens = frame.drop_duplicates("position").set_index("position")["token"]
    span = frame.loc[frame["in_span"], "position"].drop_duplicates()
    positions = grid.columns.to_numpy()
    if len(span):
        lo = max(int(span.min()) - 8, 0)
        window = positions[lo : lo + max_positions]
    else:
        window = positions[-max_positions:]
    grid, top = grid[window], top[window]
    with figure_style():
        fig = Figure(figsize=(2.0 + 0.42 * len(window), 1.5 + 0.3 * len(grid)), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(
            grid.to_numpy(), aspect="auto", cmap="coolwarm", origin="lower", vmin=0, interpolation="nearest"
        )
        for (row, col), text in np.ndenumerate(top.to_numpy()):
            literal(ax.text(col, row, _short(str(text), label_width), ha="center", va="center", fontsize=4.5))
        literal(
            ax.set_xticks(
                range(len(window)), [_short(str(tokens[p]), 10) for p in window], rotation=90, fontsize="x-small"
            )
        )
        ax.set_yticks(range(len(grid)), grid.index.tolist(), fontsize="x-small")
        ax.set_xlabel("Input token (position)")
        ax.set_ylabel("Layer (0 = embeddings)")
        ax.grid(False)
        if len(span):
            inside = np.flatnonzero(np.isin(window, span.to_numpy()))
            if inside.size:
                ax.add_patch(
                    Rectangle(
                        (inside[0] - 0.5, -0.5),
                        inside[-1] - inside[0] + 1,
                        len(grid),
                        fill=False,
                        edgecolor=REGION_COLOR,
                        linewidth=2.5,
                        label="inserted tokens",
                    )
                )
                ax.legend(loc="upper right", fontsize="small")
        fig.colorbar(image, ax=ax, label="Entropy (nats)")
        literal(ax.set_title(title))
    return fig
