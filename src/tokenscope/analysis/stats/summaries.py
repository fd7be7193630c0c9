"""Bootstrap summaries: each statistic of each metric per group, with its CI over units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.resampling import ESTIMATE_COLUMNS, Estimate
from tokenscope.analysis.stats.token_tables import UNIT, TokenData, Tokens
from tokenscope.analysis.tokens import GROUP_KEYS

DEFAULT_STATISTICS: tuple[str, ...] = ("mean", "median", "p90", "p99")


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    statistics: Sequence[str] = ("mean",),
    *,
    boot: BootstrapOptions = BootstrapOptions(),
) -> dict[str, Estimate]:
    """Point estimate and percentile CI of each statistic, resampling clusters (prompts).

    `clusters[i]` labels the unit of token i. NaN values are left out. With one token per
    cluster this is the ordinary (token-level) bootstrap. (In-memory arrays: the same per-unit
    summaries and bootstrap as bootstrap_summary.)
    """
    frame = pd.DataFrame({"_cluster": np.asarray(clusters), "value": np.asarray(values, dtype=np.float64)})
    tokens = Tokens.of(frame, ["_cluster"])
    estimates = tokens.estimates("value", [], statistics, boot)
    if () in estimates:
        return estimates[()]
    return {name: Estimate(np.nan, np.nan, np.nan, 0, 0) for name in statistics}


def bootstrap_summary(
    tokens: TokenData,
    metrics: Sequence[str],
    *,
    unit_columns: Sequence[str] = UNIT,
    group_columns: Sequence[str] | None = None,
    statistics: Sequence[str] = DEFAULT_STATISTICS,
    boot: BootstrapOptions = BootstrapOptions(),
) -> pd.DataFrame:
    """Bootstrap CIs over units of each statistic of each metric, per group; one row per number.

    Groups default to the model/source/prompt_set columns present. Columns: group columns,
    `metric`, `statistic`, `estimate`, `ci_low`, `ci_high`, `n_units`, `n_tokens` (non-NaN
    tokens), `ci_resolution` (quantiles: the histogram bin width; means: 0).
    """
    table = Tokens.of(tokens, unit_columns)
    groups = [c for c in GROUP_KEYS if c in table.columns] if group_columns is None else list(group_columns)
    per_metric = {metric: table.estimates(metric, groups, statistics, boot) for metric in metrics}
    keys = sorted({k for estimates in per_metric.values() for k in estimates}, key=_sort_key)
    rows = []
    for key in keys:
        for metric in metrics:
            found = per_metric[metric].get(key)
            for name in statistics:
                estimate = found[name] if found else Estimate(np.nan, np.nan, np.nan, 0, 0)
                rows.append(
                    {**dict(zip(groups, key, strict=True)), "metric": metric, "statistic": name, **asdict(estimate)}
                )
    return pd.DataFrame(rows, columns=[*groups, "metric", "statistic", *ESTIMATE_COLUMNS])


def _sort_key(key: tuple) -> tuple:
    """Group keys sorted as SQL's ORDER BY ... NULLS LAST."""
    return tuple((v is None, "" if v is None else v) for v in key)
