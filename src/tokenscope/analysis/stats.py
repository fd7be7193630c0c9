"""Statistics whose unit is the prompt (or prompt x sample), not the token.

Tokens of one generation are not independent: a prompt that makes a model hesitate raises the
entropy of all its tokens together. Treating tokens as independent draws makes confidence
intervals far too narrow and tests far too eager. So:

- confidence intervals come from a cluster bootstrap: units (prompts) are drawn with replacement
  and a statistic is recomputed on the pooled tokens of the drawn units (a unit drawn twice counts
  twice); the interval is the percentile interval of the resampled statistic;
- tests between two models compare per-unit means on the same units (paired);
- every random function takes a `seed`, and the same seed gives the same numbers. Each estimate
  (a group, a metric, a comparison) draws from a fresh generator seeded with `seed`, so its numbers
  do not depend on which other groups or models are in the same call.

Statistics are named: "mean", "median" and "pNN" (the NN-th percentile, e.g. "p90", "p99.9").
Quantiles are numpy's default (linear interpolation) on the pooled tokens. Tables are pandas
DataFrames; write them with tokenscope.analysis.write_table (CSV and markdown).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, TypedDict

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tokenscope.analysis.tokens import GROUP_KEYS
from tokenscope.errors import ConfigError, TokenscopeError

DEFAULT_STATISTICS: tuple[str, ...] = ("mean", "median", "p90", "p99")
# Bootstrap quantiles build a units x tokens int32 table when it has at most this many cells
# (64 MB), else resamples x tokens int64 blocks of at most _BLOCK_CELLS (32 MB).
_DENSE_CELLS = 1 << 24
_BLOCK_CELLS = 1 << 22
Correction = Literal["holm", "bh", "none"]


class BootstrapOptions(TypedDict):
    """The resampling settings every bootstrap function takes as keywords."""

    n_boot: int
    ci: float
    seed: int


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap percentile interval and what it was computed from.

    n_units counts the units (prompts) that hold at least one of the n_tokens tokens.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_units: int
    n_tokens: int


def statistic_quantile(name: str) -> float | None:
    """The quantile level a statistic name stands for: None for "mean", 0.5 for "median", 0.9 for "p90"."""
    if name == "mean":
        return None
    if name == "median":
        return 0.5
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
    if match and 0 <= float(match.group(1)) <= 100:
        return float(match.group(1)) / 100
    raise ConfigError(f"unknown statistic {name!r}; use 'mean', 'median' or 'pNN' such as 'p90'")


# --- Cluster bootstrap ----------------------------------------------------------------------------


def _resample_counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_units] how many times each unit is drawn when drawing n_units with replacement."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = (draws + (np.arange(n_boot) * n_units)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units)


def _order_statistic_index(sorted_codes: np.ndarray, counts: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Index into the sorted tokens of the ks[i, r]-th smallest (0-based) token of resample r.

    A resample is the sorted token list with each token repeated as often as its unit was drawn
    (counts[r, unit]); its k-th smallest element is the first token whose cumulative repeat count
    exceeds k. The result is clipped to the last token where k is out of range.
    """
    n_units, n_tokens = counts.shape[1], sorted_codes.shape[0]
    if n_units * n_tokens <= _DENSE_CELLS and n_units * 16 <= n_tokens:
        # Few units with many tokens each (prompts): bisection over token index, where the
        # cumulative repeat count up to token j is counts[r] @ per_unit_cumulative[:, j].
        per_unit_cumulative = np.zeros((n_units, n_tokens), dtype=np.int32)
        per_unit_cumulative[sorted_codes, np.arange(n_tokens)] = 1
        np.cumsum(per_unit_cumulative, axis=1, out=per_unit_cumulative)
        low = np.zeros(ks.shape, dtype=np.int64)
        high = np.full(ks.shape, n_tokens - 1, dtype=np.int64)
        weights = counts.T[:, None, :]  # [units, 1, resamples]
        for _ in range(int(np.ceil(np.log2(max(n_tokens, 2)))) + 1):
            middle = (low + high) // 2
            repeated = (per_unit_cumulative[:, middle] * weights).sum(axis=0)
            past = repeated > ks
            high, low = np.where(past, middle, high), np.where(past, low, middle + 1)
        return np.minimum(low, n_tokens - 1)
    # Many small units (down to one token each): cumulative repeat counts per resample, in blocks.
    index = np.empty(ks.shape, dtype=np.int64)
    block = max(1, _BLOCK_CELLS // max(n_tokens, 1))
    for begin in range(0, counts.shape[0], block):
        cumulative = np.cumsum(counts[begin : begin + block][:, sorted_codes], axis=1)
        for offset, row in enumerate(cumulative):
            index[:, begin + offset] = np.searchsorted(row, ks[:, begin + offset], side="right")
    return np.minimum(index, n_tokens - 1)


def _pooled_quantiles(
    sorted_values: np.ndarray, sorted_codes: np.ndarray, counts: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    """[levels, resamples] np.quantile of each resample's pooled tokens, without pooling them."""
    n_units = counts.shape[1]
    totals = counts @ np.bincount(sorted_codes, minlength=n_units)
    # linear interpolation between the order statistics around (total - 1) * q, as numpy does
    position = (totals[None, :] - 1) * np.asarray(levels, dtype=np.float64)[:, None]
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, totals - 1)
    valid = totals > 0  # a resample holds no tokens when only units without tokens were drawn
    ks = np.where(valid, np.concatenate([below, above]), 0)
    index = _order_statistic_index(sorted_codes, counts, ks)
    low, high = sorted_values[index[: len(levels)]], sorted_values[index[len(levels) :]]
    return np.where(valid, low + (position - below) * (high - low), np.nan)


def _statistics_of_resamples(
    values: np.ndarray, codes: np.ndarray, counts: np.ndarray, statistics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each statistic on the pooled tokens of each resample; counts[r, u] = draws of unit u."""
    n_units = counts.shape[1]
    levels = {name: statistic_quantile(name) for name in statistics}
    result: dict[str, np.ndarray] = {}
    if any(q is None for q in levels.values()):
        totals = counts @ np.bincount(codes, minlength=n_units)
        sums = counts @ np.bincount(codes, weights=values, minlength=n_units)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(totals > 0, sums / totals, np.nan)
        result.update({name: mean for name, q in levels.items() if q is None})
    quantile_levels = {name: q for name, q in levels.items() if q is not None}
    if quantile_levels:
        order = np.argsort(values, kind="stable")
        quantiles = _pooled_quantiles(values[order], codes[order], counts, list(quantile_levels.values()))
        result.update(zip(quantile_levels, quantiles, strict=True))
    return {name: result[name] for name in statistics}


def bootstrap_codes(
    values: np.ndarray,
    codes: np.ndarray,
    n_units: int,
    statistics: Sequence[str] = ("mean",),
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """cluster_bootstrap on units already numbered 0..n_units-1.

    Units with no tokens here still take part in the draws: use this for a statistic of a subset
    of tokens (a ratio such as an overlap share) whose units are those of the whole data.
    """
    values = np.asarray(values, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    if values.shape != codes.shape:
        raise ValueError(f"{values.shape[0]} values but {codes.shape[0]} unit labels")
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci}")
    n_tokens, units_present = int(values.size), int(np.unique(codes).size)
    if n_tokens == 0 or n_units == 0:
        return {name: Estimate(np.nan, np.nan, np.nan, units_present, n_tokens) for name in statistics}
    point = _statistics_of_resamples(values, codes, np.ones((1, n_units), dtype=np.int64), statistics)
    rng = np.random.default_rng(seed)
    # resamples in blocks: a resamples x units count table is large when units are tokens
    block = max(1, _BLOCK_CELLS // n_units)
    parts = [
        _statistics_of_resamples(values, codes, _resample_counts(n_units, min(block, n_boot - begin), rng), statistics)
        for begin in range(0, n_boot, block)
    ]
    resampled = {name: np.concatenate([part[name] for part in parts]) for name in statistics}
    tail = (1 - ci) / 2
    estimates = {}
    for name in statistics:
        finite = resampled[name][np.isfinite(resampled[name])]
        low, high = np.quantile(finite, [tail, 1 - tail]) if finite.size else (np.nan, np.nan)
        estimates[name] = Estimate(float(point[name][0]), float(low), float(high), units_present, n_tokens)
    return estimates


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    statistics: Sequence[str] = ("mean",),
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Point estimate and percentile CI of each statistic, resampling clusters (prompts).

    `clusters[i]` labels the unit of token i. NaN values are left out. With one token per
    cluster this is the ordinary (token-level) bootstrap.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(clusters)
    keep = ~np.isnan(values)
    codes, uniques = pd.factorize(labels[keep], use_na_sentinel=False)
    return bootstrap_codes(values[keep], codes, len(uniques), statistics, n_boot=n_boot, ci=ci, seed=seed)


def _unit_codes(frame: pd.DataFrame, unit_columns: Sequence[str]) -> tuple[np.ndarray, int]:
    """(unit number of each row, number of units) for the units named by unit_columns."""
    _require(frame, unit_columns)
    grouped = frame.groupby(list(unit_columns), sort=True, dropna=False)
    return grouped.ngroup().to_numpy(np.int64), grouped.ngroups


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")


def _groups(frame: pd.DataFrame, group_columns: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(key tuple, sub-frame) per group; one group with key () when there are no group columns."""
    if not group_columns:
        yield (), frame
        return
    for key, part in frame.groupby(list(group_columns), sort=True, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), part


def bootstrap_summary(
    tokens: pd.DataFrame,
    metrics: Sequence[str],
    *,
    unit_columns: Sequence[str] = ("prompt_id",),
    group_columns: Sequence[str] | None = None,
    statistics: Sequence[str] = DEFAULT_STATISTICS,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap CIs over units of each statistic of each metric, per group; one row per number.

    Groups default to the model/source/prompt_set columns present. Columns: group columns,
    `metric`, `statistic`, `estimate`, `ci_low`, `ci_high`, `n_units`, `n_tokens` (non-NaN tokens).
    """
    group_columns = [c for c in GROUP_KEYS if c in tokens.columns] if group_columns is None else list(group_columns)
    _require(tokens, [*group_columns, *metrics])
    rows = []
    for key, part in _groups(tokens, group_columns):
        for metric in metrics:
            values = part[metric].to_numpy(np.float64)
            keep = ~np.isnan(values)
            codes, n_units = _unit_codes(part.loc[keep], unit_columns)
            estimates = bootstrap_codes(values[keep], codes, n_units, statistics, n_boot=n_boot, ci=ci, seed=seed)
            for name, estimate in estimates.items():
                rows.append(
                    {
                        **dict(zip(group_columns, key, strict=True)),
                        "metric": metric,
                        "statistic": name,
                        **asdict(estimate),
                    }
                )
    columns = [*group_columns, "metric", "statistic", *Estimate.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)


# --- Paired tests between models ------------------------------------------------------------------


def per_unit_means(
    tokens: pd.DataFrame, metric: str, *, unit_columns: Sequence[str] = ("prompt_id",), model_column: str = "model"
) -> pd.DataFrame:
    """Mean of `metric` per unit (rows) and model (columns), the input of paired_tests."""
    _require(tokens, [*unit_columns, model_column, metric])
    values = tokens[metric].astype("float64")
    keys = [tokens[c] for c in unit_columns]
    return values.groupby([*keys, tokens[model_column]], sort=True).mean().unstack(model_column)


def adjust_pvalues(pvalues: Sequence[float] | np.ndarray, method: Correction = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values: Holm (family-wise error) or Benjamini-Hochberg (FDR).

    NaN p-values stay NaN and do not count as tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if method == "none":
        return p.copy()
    if not tested.any():
        return adjusted
    if method == "bh":
        adjusted[tested] = scipy_stats.false_discovery_control(p[tested], method="bh")
        return adjusted
    if method != "holm":
        raise ConfigError(f"unknown correction {method!r}; use 'holm', 'bh' or 'none'")
    m = int(tested.sum())
    order = np.argsort(p[tested], kind="stable")
    # the i-th smallest p (0-based) is multiplied by m - i; adjusted values never decrease
    stepped = np.maximum.accumulate(p[tested][order] * (m - np.arange(m)))
    holm = np.empty(m)
    holm[order] = np.minimum(stepped, 1.0)
    adjusted[tested] = holm
    return adjusted


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation: (W+ - W-) / (W+ + W-) over non-zero differences.

    +1: every unit increased; -1: every unit decreased; 0: no tendency. Zero differences are left
    out, as in the Wilcoxon test (zero_method="wilcox").
    """
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = scipy_stats.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def sign_flip_pvalue(differences: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> tuple[float, bool]:
    """Two-sided paired permutation test of mean difference 0: (p-value, exact).

    Under the null each unit's difference is as likely to have either sign. Exact over all 2^n sign
    patterns when 2^n <= n_perm; otherwise n_perm random patterns and p = (k + 1) / (n_perm + 1),
    where k counts patterns at least as extreme as the observed one.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        return np.nan, True
    observed = abs(d.sum())
    tolerance = 1e-12 * np.abs(d).sum()  # sums equal up to rounding count as equally extreme
    if 2**n <= n_perm:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return float(np.mean(np.abs(patterns @ d) >= observed - tolerance)), True
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(n_perm, n))
    extreme = int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (extreme + 1) / (n_perm + 1), False


def paired_tests(
    per_unit: pd.DataFrame,
    base: str,
    others: Sequence[str] | None = None,
    *,
    n_perm: int = 10_000,
    n_boot: int = 2000,
    ci: float = 0.95,
    alpha: float = 0.05,
    correction: Correction = "holm",
    seed: int = 0,
) -> pd.DataFrame:
    """Each other model against `base` on the units both have (rows of `per_unit`, e.g. per_unit_means).

    Per model: `n_units`, `mean_base`, `mean_model`, `mean_diff` (model - base, mean over units)
    with its bootstrap CI over units, `wilcoxon_stat` and `p_wilcoxon` (Wilcoxon signed-rank on
    the per-unit differences, zeros dropped), `rank_biserial` (its effect size, positive when the
    model is higher), `p_permutation` (sign-flip test of the mean difference; `permutation_exact`
    says whether all sign patterns were enumerated). `p_wilcoxon_adj` and `p_permutation_adj` are
    corrected over the models of the call (`correction`); `significant` is p_wilcoxon_adj < alpha.
    """
    if base not in per_unit.columns:
        raise KeyError(f"base model {base!r} is not a column; columns: {list(per_unit.columns)}")
    others = [c for c in per_unit.columns if c != base] if others is None else list(others)
    rows = []
    for model in others:
        pair = per_unit[[base, model]].dropna()
        d = (pair[model] - pair[base]).to_numpy(np.float64)
        n = d.size
        mean_ci = bootstrap_codes(d, np.arange(n), n, ("mean",), n_boot=n_boot, ci=ci, seed=seed)["mean"]
        if np.any(d != 0):
            wilcoxon = scipy_stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
            w_stat, p_wilcoxon = float(wilcoxon.statistic), float(wilcoxon.pvalue)
        else:  # identical on every unit (or no units): nothing to test
            w_stat, p_wilcoxon = np.nan, (1.0 if n else np.nan)
        p_perm, exact = sign_flip_pvalue(d, n_perm, seed)
        rows.append(
            {
                "model": model,
                "base": base,
                "n_units": n,
                "mean_base": float(pair[base].mean()) if n else np.nan,
                "mean_model": float(pair[model].mean()) if n else np.nan,
                "mean_diff": mean_ci.estimate,
                "diff_ci_low": mean_ci.ci_low,
                "diff_ci_high": mean_ci.ci_high,
                "wilcoxon_stat": w_stat,
                "p_wilcoxon": p_wilcoxon,
                "rank_biserial": rank_biserial(d) if n else np.nan,
                "p_permutation": p_perm,
                "permutation_exact": exact,
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "model",
            "base",
            "n_units",
            "mean_base",
            "mean_model",
            "mean_diff",
            "diff_ci_low",
            "diff_ci_high",
            "wilcoxon_stat",
            "p_wilcoxon",
            "rank_biserial",
            "p_permutation",
            "permutation_exact",
        ],
    )
    table["p_wilcoxon_adj"] = adjust_pvalues(table["p_wilcoxon"].to_numpy(), correction)
    table["p_permutation_adj"] = adjust_pvalues(table["p_permutation"].to_numpy(), correction)
    table["significant"] = table["p_wilcoxon_adj"] < alpha
    return table


# --- High-entropy ("forking") tokens --------------------------------------------------------------


def share_above(
    values: Sequence[float] | np.ndarray,
    threshold: float,
    clusters: Sequence[object] | np.ndarray,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Share of tokens with value > threshold, with a CI over clusters (the threshold held fixed)."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    above = (values[keep] > threshold).astype(np.float64)
    return cluster_bootstrap(above, np.asarray(clusters)[keep], ("mean",), n_boot=n_boot, ci=ci, seed=seed)["mean"]


def high_entropy_overlap(
    base_entropy: Sequence[float] | np.ndarray,
    other_entropy: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    *,
    quantile: float = 0.8,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
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
    keep = ~(np.isnan(base) | np.isnan(other))
    base, other = base[keep], other[keep]
    codes, uniques = pd.factorize(np.asarray(clusters)[keep], use_na_sentinel=False)
    if base.size == 0:
        return Estimate(np.nan, np.nan, np.nan, 0, 0)
    high_base = base > np.quantile(base, quantile)
    both = other[high_base] > np.quantile(other, quantile)
    return bootstrap_codes(
        both.astype(np.float64), codes[high_base], len(uniques), ("mean",), n_boot=n_boot, ci=ci, seed=seed
    )["mean"]


# --- Trends over a series of checkpoints ---------------------------------------------------------

ALIGN_COLUMNS: tuple[str, ...] = ("prompt_id", "sample", "position")


def _aligned(
    base: pd.DataFrame, other: pd.DataFrame, values: Sequence[str], carry: Sequence[str], what: str
) -> pd.DataFrame:
    """Rows of base and other scored on the same token at the same place.

    `values` come from both frames (suffixes _base and _other); `carry` columns from the base.
    """
    keys = [c for c in ALIGN_COLUMNS if c in base.columns and c in other.columns]
    carry = [c for c in dict.fromkeys(carry) if c not in keys and c != "token_id" and c not in values]
    _require(base, [*keys, "token_id", *carry, *values])
    _require(other, [*keys, "token_id", *values])
    merged = base[[*keys, "token_id", *carry, *values]].merge(
        other[[*keys, "token_id", *values]], on=keys, how="inner", suffixes=("_base", "_other"), validate="one_to_one"
    )
    same = merged["token_id_base"] == merged["token_id_other"]
    if len(merged) != len(base) or len(merged) != len(other) or not same.all():
        raise ValueError(
            f"{what} needs both models scored on the same tokens (e.g. teacher-forced reference answers "
            f"or cross-scored generations): {len(base)} and {len(other)} rows, {int(same.sum())} matching tokens"
        )
    return merged.drop(columns="token_id_other").rename(columns={"token_id_base": "token_id"})


def checkpoint_trends(
    tokens: pd.DataFrame,
    checkpoints: Sequence[str],
    *,
    pairs: pd.DataFrame | None = None,
    metric: str = "entropy",
    unit_columns: Sequence[str] = ("prompt_id",),
    quantile: float = 0.8,
    overlap: bool = True,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics of each checkpoint against its index in `checkpoints` (the base first, index 0).

    `tokens`: a per-token frame of one source (one prompt set) holding every checkpoint's rows.
    Measures, each with a bootstrap CI over units:
      mean_<metric>, p90_<metric>, p99_<metric>;
      share_above_base_p<q>: share of tokens above the base's `quantile` of the metric;
      high_<metric>_overlap: high_entropy_overlap with the base (only with overlap=True, which
        needs every checkpoint scored on the same tokens as the base);
      mean_kl_base_model = KL(base || checkpoint) and mean_kl_model_base = KL(checkpoint || base),
        from `pairs` (pair tables of the base with each checkpoint, either order), when given.
    Columns: `checkpoint`, `model`, `measure`, `estimate`, `ci_low`, `ci_high`, `n_units`, `n_tokens`.
    """
    _require(tokens, ["model", metric, *unit_columns])
    base_name = checkpoints[0]
    base = tokens[tokens["model"] == base_name]
    if base.empty:
        raise TokenscopeError(f"no tokens of the base model {base_name!r}")
    threshold = float(np.quantile(base[metric].dropna().to_numpy(np.float64), quantile))
    share_name = f"share_above_base_p{quantile * 100:g}"
    options: BootstrapOptions = {"n_boot": n_boot, "ci": ci, "seed": seed}
    rows = []

    def add(index: int, model: str, measure: str, estimate: Estimate) -> None:
        rows.append({"checkpoint": index, "model": model, "measure": measure, **asdict(estimate)})

    for index, model in enumerate(checkpoints):
        own = tokens[tokens["model"] == model]
        if own.empty:
            raise TokenscopeError(f"no tokens of checkpoint {model!r}")
        values = own[metric].to_numpy(np.float64)
        units, _ = _unit_codes(own, unit_columns)
        for name, estimate in cluster_bootstrap(values, units, ("mean", "p90", "p99"), **options).items():
            add(index, model, f"{name}_{metric}", estimate)
        add(index, model, share_name, share_above(values, threshold, units, **options))
        if overlap:
            merged = _aligned(base, own, [metric], unit_columns, f"the high-{metric} overlap")
            merged_units, _ = _unit_codes(merged, unit_columns)
            estimate = high_entropy_overlap(
                merged[f"{metric}_base"], merged[f"{metric}_other"], merged_units, quantile=quantile, **options
            )
            add(index, model, f"high_{metric}_overlap", estimate)
        if pairs is not None and index > 0:
            forward = pairs[(pairs["model_a"] == base_name) & (pairs["model_b"] == model)]
            backward = pairs[(pairs["model_a"] == model) & (pairs["model_b"] == base_name)]
            pair, base_is_a = (forward, True) if len(forward) else (backward, False)
            if len(pair):
                pair_units, _ = _unit_codes(pair, unit_columns)
                base_model, model_base = ("kl_a_b", "kl_b_a") if base_is_a else ("kl_b_a", "kl_a_b")
                for measure, column in (("mean_kl_base_model", base_model), ("mean_kl_model_base", model_base)):
                    estimates = cluster_bootstrap(pair[column].to_numpy(np.float64), pair_units, ("mean",), **options)
                    add(index, model, measure, estimates["mean"])
    return pd.DataFrame(rows, columns=["checkpoint", "model", "measure", *Estimate.__dataclass_fields__])


# --- Tokens that changed most ---------------------------------------------------------------------


def token_changes(
    frame: pd.DataFrame,
    value: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = ("prompt_id",),
    extra_means: Sequence[str] = (),
    min_count: int = 5,
    top_n: int = 20,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Groups of tokens (by token, or by context token and token) with the largest mean `value`.

    `value` is a per-token change, e.g. a pair table's `logprob_diff` or `kl_a_b`. Groups with
    fewer than `min_count` tokens are dropped; then the `top_n` groups with the largest positive
    mean (direction "up", largest first) and the `top_n` with the most negative mean ("down",
    lowest first); ties go to the larger count. The CI of each listed mean is a cluster bootstrap
    over the units (prompts) in which the group occurs, so a group seen in one prompt only has a
    zero-width interval: read it with `n_units`. Columns: `by`, `count`, `n_units`,
    `mean_<extra>` per extra_means, `mean_<value>`, `ci_low`, `ci_high`, `direction`.
    """
    by = list(by)
    _require(frame, [*by, *unit_columns, value, *extra_means])
    mean_column = f"mean_{value}"
    columns = [
        *by,
        "count",
        "n_units",
        *[f"mean_{c}" for c in extra_means],
        mean_column,
        "ci_low",
        "ci_high",
        "direction",
    ]
    data = frame[~frame[value].isna()].reset_index(drop=True)
    units, _ = _unit_codes(data, unit_columns)
    data = data.assign(_unit=units)
    grouped = data.groupby(by, sort=True, dropna=False)
    table = grouped[[*extra_means, value]].mean().astype("float64")
    table.columns = [*[f"mean_{c}" for c in extra_means], mean_column]
    table.insert(0, "n_units", grouped["_unit"].nunique())
    table.insert(0, "count", grouped.size())
    table = table[table["count"] >= min_count].reset_index()
    if table.empty or top_n <= 0:
        return pd.DataFrame(columns=columns)
    up = table[table[mean_column] > 0].sort_values([mean_column, "count"], ascending=[False, False], kind="stable")
    down = table[table[mean_column] < 0].sort_values([mean_column, "count"], ascending=[True, False], kind="stable")
    listed = pd.concat(
        [up.head(top_n).assign(direction="up"), down.head(top_n).assign(direction="down")], ignore_index=True
    )

    positions = grouped.indices
    lows, highs = [], []
    for key in listed[by].itertuples(index=False, name=None):
        rows = positions[key if len(by) > 1 else key[0]]
        codes, uniques = pd.factorize(data["_unit"].to_numpy()[rows])
        estimate = bootstrap_codes(
            data[value].to_numpy(np.float64)[rows], codes, len(uniques), ("mean",), n_boot=n_boot, ci=ci, seed=seed
        )["mean"]
        lows.append(estimate.ci_low)
        highs.append(estimate.ci_high)
    listed["ci_low"], listed["ci_high"] = lows, highs
    return listed[columns]


def changed_tokens(
    base: pd.DataFrame,
    other: pd.DataFrame,
    metric: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = ("prompt_id",),
    min_count: int = 5,
    top_n: int = 20,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """token_changes of `metric` from the base's tokens frame to another model's, on the same tokens.

    Rows are matched on prompt_id, sample and position and must hold the same token in both (the
    same teacher-forced or cross-scored text). The change is other - base; grouping columns are
    taken from the base frame. Columns as token_changes, with `mean_base`, `mean_other` and
    `mean_diff`.
    """
    merged = _aligned(base, other, [metric], [*unit_columns, *by], "changed_tokens")
    merged["base"] = merged[f"{metric}_base"].astype("float64")
    merged["other"] = merged[f"{metric}_other"].astype("float64")
    merged["diff"] = merged["other"] - merged["base"]
    return token_changes(
        merged,
        "diff",
        by=by,
        unit_columns=unit_columns,
        extra_means=("base", "other"),
        min_count=min_count,
        top_n=top_n,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
