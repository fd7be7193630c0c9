"""High-entropy ("forking") tokens: the share of tokens above a threshold, and how far two models'
high-entropy positions on the same tokens overlap, each with a CI over units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.resampling import Estimate, UnitSummary, bootstrap_units
from tokenscope.analysis.stats.token_tables import Tokens, fetch_one, group_condition
from tokenscope.duckdb_tables import sql_literal, sql_number


def share_above_summary(tokens: Tokens, metric: str, model: str, threshold: float) -> UnitSummary:
    """Per unit: the model's non-NaN tokens (counts) and those above `threshold` (sums)."""
    rows = tokens.joined(f"{sql_number(metric)} AS v")
    return tokens.ratio_summary(
        f"SELECT _unit, count(*) AS n, count(*) FILTER (WHERE v > {sql_literal(float(threshold))}) AS s "
        f"FROM ({rows} WHERE {group_condition(['model'], [model])}) WHERE NOT isnan(v) GROUP BY _unit"
    )


def share_above(
    values: Sequence[float] | np.ndarray,
    threshold: float,
    clusters: Sequence[object] | np.ndarray,
    *,
    boot: BootstrapOptions = BootstrapOptions(),
) -> Estimate:
    """Share of tokens with value > threshold, with a CI over clusters (the threshold held fixed)."""
    frame = pd.DataFrame(
        {"model": "m", "prompt_id": np.asarray(clusters), "value": np.asarray(values, dtype=np.float64)}
    )
    summary = share_above_summary(Tokens.of(frame), "value", "m", threshold)
    return bootstrap_units(summary, ("mean",), boot=boot)["mean"]


def overlap_summary(aligned: Tokens, quantile: float) -> UnitSummary:
    """Per unit (of aligned positions with both values): high-base positions and those high for both."""
    (thresholds,) = fetch_one(
        aligned.con,
        f"SELECT [quantile_cont(base, {quantile!r}), quantile_cont(other, {quantile!r})] "
        f"FROM {aligned.view} WHERE NOT isnan(base) AND NOT isnan(other)",
    )
    if thresholds[0] is None:
        return UnitSummary(np.zeros(0), np.zeros(0))
    high_base, high_other = (sql_literal(float(t)) for t in thresholds)
    rows = aligned.joined("t.base, t.other")
    return aligned.ratio_summary(
        f"SELECT _unit, count(*) FILTER (WHERE base > {high_base}) AS n, "
        f"count(*) FILTER (WHERE base > {high_base} AND other > {high_other}) AS s "
        f"FROM ({rows}) WHERE NOT isnan(base) AND NOT isnan(other) GROUP BY _unit"
    )


def high_entropy_overlap(
    base_entropy: Sequence[float] | np.ndarray,
    other_entropy: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    *,
    quantile: float = 0.8,
    boot: BootstrapOptions = BootstrapOptions(),
) -> Estimate:
    """Share of the base's high-entropy positions that are high-entropy for the other model too.

    Inputs are aligned: position i is the same token of the same text for both models. A position
    is high-entropy for a model when its entropy is above that model's own `quantile` (0.8: the
    top 20%, arXiv 2506.01939). Independent models give about 1 - quantile; identical ones 1.
    The CI resamples all clusters (thresholds held fixed); n_tokens counts the base's positions.
    """
    base = np.asarray(base_entropy, dtype=np.float64)
    other = np.asarray(other_entropy, dtype=np.float64)
    if base.shape != other.shape:
        raise ValueError(f"aligned positions needed: {base.shape[0]} base values, {other.shape[0]} other")
    frame = pd.DataFrame({"prompt_id": np.asarray(clusters), "base": base, "other": other})
    summary = overlap_summary(Tokens.of(frame), quantile)
    return bootstrap_units(summary, ("mean",), boot=boot)["mean"]
