"""Outcome figures of a group's checkpoints (tables of tokenscope.outcomes.stats): accuracy, pass@k
and mean entropy per checkpoint; AUROC of per-generation token statistics against correctness; the
entropy-performance fit R = -a exp(H) + b with its residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tokenscope.figures.style import figure_style, literal
from tokenscope.outcomes.fit import DESCRIPTIVE_BELOW
from tokenscope.outcomes.stats import GENERATION_STATISTICS

MEAN_ENTROPY_LABEL = "Mean token entropy (nats)"
# Short labels of the per-generation statistics in legends.
STATISTIC_LABELS: dict[str, str] = {
    "mean_entropy": "mean entropy",
    "p90_entropy": "p90 entropy",
    "share_high_entropy": "share above base p80",
    "max_surprisal": "max surprisal",
    "length": "length",
}


def _errors(table: pd.DataFrame, estimate: str, low: str, high: str) -> np.ndarray:
    """[2, n] distances from the estimate to the CI bounds (0 where a bound is missing)."""
    values = table[estimate].to_numpy(dtype=np.float64)
    below = np.nan_to_num(values - table[low].to_numpy(dtype=np.float64), nan=0.0)
    above = np.nan_to_num(table[high].to_numpy(dtype=np.float64) - values, nan=0.0)
    return np.vstack([np.maximum(below, 0), np.maximum(above, 0)])


def _checkpoint_axis(ax: Axes, table: pd.DataFrame) -> None:
    ticks = table.drop_duplicates("checkpoint").sort_values("checkpoint")
    labels = [f"{c}\n{m}" for c, m in zip(ticks["checkpoint"], ticks["model"], strict=True)]
    literal(ax.set_xticks(ticks["checkpoint"].to_list(), labels, fontsize="x-small"))
    ax.set_xlabel("Checkpoint (0 = base)")


def plot_outcomes(accuracy: pd.DataFrame, pass_at_k: pd.DataFrame, title: str) -> Figure:
    """Accuracy per checkpoint, pass@k against k (a line per model) and mean token entropy per
    checkpoint, each with its bootstrap CI over prompts."""
    accuracy = accuracy.sort_values("checkpoint")
    with figure_style():
        fig = Figure(figsize=(13, 3.8), layout="constrained")
        ax_acc, ax_pass, ax_entropy = fig.subplots(1, 3)
        color = sns.color_palette("deep")[0]
        x = accuracy["checkpoint"].to_numpy()
        ax_acc.errorbar(
            x,
            accuracy["estimate"],
            yerr=_errors(accuracy, "estimate", "ci_low", "ci_high"),
            fmt="-o",
            color=color,
            capsize=3,
            markersize=4,
        )
        ax_acc.set_ylabel("Accuracy (pass@1)")
        ax_acc.set_ylim(-0.02, 1.02)
        _checkpoint_axis(ax_acc, accuracy)
        models = list(accuracy["model"])
        colors = dict(zip(models, sns.color_palette("viridis", len(models)), strict=True))
        for model in models:
            line = pass_at_k[pass_at_k["model"] == model].sort_values("k")
            if line.empty:
                continue
            ax_pass.plot(line["k"], line["estimate"], "-o", color=colors[model], label=model, markersize=4)
            ax_pass.fill_between(
                line["k"], line["ci_low"], line["ci_high"], color=colors[model], alpha=0.15, linewidth=0
            )
        ax_pass.set_xlabel("k (samples per prompt)")
        ax_pass.set_ylabel("pass@k (unbiased estimator)")
        ax_pass.set_ylim(-0.02, 1.02)
        ax_pass.set_xticks(sorted(set(pass_at_k["k"])))
        literal(ax_pass.legend(fontsize="x-small", title="model"))
        ax_entropy.errorbar(
            x,
            accuracy["mean_entropy"],
            yerr=_errors(accuracy, "mean_entropy", "entropy_ci_low", "entropy_ci_high"),
            fmt="-o",
            color=sns.color_palette("deep")[3],
            capsize=3,
            markersize=4,
        )
        ax_entropy.set_ylabel(MEAN_ENTROPY_LABEL)
        _checkpoint_axis(ax_entropy, accuracy)
        literal(fig.suptitle(title))
    return fig


def plot_auroc(auroc: pd.DataFrame, paired: pd.DataFrame, title: str) -> Figure:
    """AUROC of each per-generation statistic as a detector of incorrect answers per checkpoint
    (0.5: no information) and its paired difference from the base, with bootstrap CIs."""
    statistics = [name for name in GENERATION_STATISTICS if name in set(auroc["statistic"])]
    colors = dict(zip(statistics, sns.color_palette("deep", len(statistics)), strict=True))
    offsets = dict(zip(statistics, np.linspace(-0.2, 0.2, len(statistics)), strict=True))
    with figure_style():
        fig = Figure(figsize=(12, 4.2), layout="constrained")
        ax_auc, ax_diff = fig.subplots(1, 2)
        for name in statistics:
            rows = auroc[auroc["statistic"] == name].sort_values("checkpoint")
            error = _errors(rows, "auroc", "ci_low", "ci_high")
            ax_auc.errorbar(
                rows["checkpoint"] + offsets[name],
                rows["auroc"],
                yerr=error,
                fmt="-o",
                color=colors[name],
                capsize=2,
                markersize=4,
                label=STATISTIC_LABELS[name],
            )
            diff = paired[paired["statistic"] == name].sort_values("checkpoint")
            if not diff.empty:
                error = _errors(diff, "diff", "ci_low", "ci_high")
                ax_diff.errorbar(
                    diff["checkpoint"] + offsets[name],
                    diff["diff"],
                    yerr=error,
                    fmt="o",
                    color=colors[name],
                    capsize=2,
                    markersize=4,
                    label=STATISTIC_LABELS[name],
                )
        ax_auc.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax_auc.set_ylabel("AUROC for an incorrect answer")
        ax_auc.set_ylim(-0.02, 1.02)
        _checkpoint_axis(ax_auc, auroc)
        literal(ax_auc.legend(fontsize="x-small", title="statistic of a generation"))
        ax_diff.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax_diff.set_ylabel("AUROC − base's AUROC (paired)")
        if paired.empty:
            ax_diff.text(
                0.5, 0.5, "one model: nothing to compare", ha="center", va="center", transform=ax_diff.transAxes
            )
        else:
            _checkpoint_axis(ax_diff, paired)
        literal(fig.suptitle(title))
    return fig


def fit_label(fit: pd.DataFrame) -> str:
    """The fitted parameters with their CIs, R² and the descriptive flag, in one line."""
    params = fit.set_index("parameter")
    if not np.isfinite(params.loc["a", "estimate"]):
        return "no fit: fewer than two checkpoints with distinct entropy"
    parts = []
    for name in ("a", "b"):
        estimate, low, high = (params.loc[name, column] for column in ("estimate", "ci_low", "ci_high"))
        parts.append(f"{name} = {estimate:.3g} [{low:.3g}, {high:.3g}]")
    r_squared = params.loc["a", "r_squared"]
    text = ", ".join(parts) + (f", R² = {r_squared:.3f}" if np.isfinite(r_squared) else "")
    n = int(params.loc["a", "n_checkpoints"])
    if bool(params.loc["a", "descriptive"]):
        text += f"\ndescriptive only: {n} checkpoints (< {DESCRIPTIVE_BELOW}); not a test of the law"
    return text


def plot_entropy_fit(points: pd.DataFrame, fit: pd.DataFrame, curve: pd.DataFrame, title: str) -> Figure:
    """Accuracy R against mean token entropy H per checkpoint (bootstrap CIs on both), the fitted
    R = -a exp(H) + b with its pointwise bootstrap band, and the residuals R - fitted."""
    points = points.sort_values("checkpoint")
    with figure_style():
        fig = Figure(figsize=(7.5, 6.5), layout="constrained")
        ax_fit, ax_res = fig.subplots(2, 1, height_ratios=[3, 1.3])
        deep = sns.color_palette("deep")
        if not curve.empty:
            ax_fit.plot(curve["entropy"], curve["fitted"], color=deep[3], label="R = −a·exp(H) + b")
            ax_fit.fill_between(
                curve["entropy"], curve["ci_low"], curve["ci_high"], color=deep[3], alpha=0.15, linewidth=0
            )
        ax_fit.errorbar(
            points["entropy"],
            points["accuracy"],
            xerr=_errors(points, "entropy", "entropy_ci_low", "entropy_ci_high"),
            yerr=_errors(points, "accuracy", "accuracy_ci_low", "accuracy_ci_high"),
            fmt="o",
            color=deep[0],
            capsize=3,
            markersize=5,
            label="checkpoints",
        )
        for _, row in points.iterrows():
            if np.isfinite(row["entropy"]) and np.isfinite(row["accuracy"]):
                literal(
                    ax_fit.annotate(
                        str(row["checkpoint"]),
                        (row["entropy"], row["accuracy"]),
                        textcoords="offset points",
                        xytext=(5, 5),
                        fontsize="small",
                    )
                )
        ax_fit.set_xlabel(f"H: {MEAN_ENTROPY_LABEL} of own generations")
        ax_fit.set_ylabel("Accuracy R")
        ax_fit.set_title(fit_label(fit), fontsize="small")
        literal(ax_fit.legend(fontsize="small"))
        ax_res.axhline(0.0, color="grey", linewidth=1)
        ax_res.bar(
            points["checkpoint"], np.nan_to_num(points["residual"].to_numpy(dtype=np.float64)), color=deep[0], width=0.5
        )
        ax_res.set_ylabel("Residual R − fit")
        _checkpoint_axis(ax_res, points)
        literal(fig.suptitle(title))
    return fig
