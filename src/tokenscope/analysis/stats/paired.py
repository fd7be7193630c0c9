"""Paired tests between models on the same units: per-unit means, Wilcoxon signed-rank and sign-flip
tests of the per-unit differences, a bootstrap CI of their mean, and multiple-comparison corrections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.resampling import BLOCK_CELLS, UnitSummary, bootstrap_units
from tokenscope.analysis.stats.token_tables import UNIT, TokenData, Tokens
from tokenscope.errors import ConfigError

Correction = Literal["holm", "bh", "none"]


def per_unit_means(
    tokens: TokenData, metric: str, *, unit_columns: Sequence[str] = UNIT, model_column: str = "model"
) -> pd.DataFrame:
    """Mean of `metric` per unit (rows, sorted) and model (columns), the input of paired_tests."""
    table = Tokens.of(tokens, unit_columns)
    series = table.series(metric, [model_column])
    units = np.unique(np.concatenate([s.units for s in series.values()])) if series else np.zeros(0, np.int64)
    means = pd.DataFrame(index=range(units.size))
    for (model,), part in series.items():
        column = np.full(units.size, np.nan)
        column[np.searchsorted(units, part.units)] = part.sums / part.counts
        means[model] = column
    keys = table.unit_keys(units)
    means.index = pd.MultiIndex.from_frame(keys) if len(unit_columns) > 1 else pd.Index(keys.iloc[:, 0])
    means.columns.name = model_column
    return means


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
    where k counts patterns at least as extreme as the observed one. Patterns are drawn in blocks
    (the same stream as one draw), so memory stays bounded with many units.
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
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_CELLS // n)
    extreme = 0
    for begin in range(0, n_perm, block):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(block, n_perm - begin), n))
        extreme += int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (extreme + 1) / (n_perm + 1), False


def paired_tests(
    per_unit: pd.DataFrame,
    base: str,
    others: Sequence[str] | None = None,
    *,
    n_perm: int = 10_000,
    alpha: float = 0.05,
    correction: Correction = "holm",
    boot: BootstrapOptions = BootstrapOptions(),
) -> pd.DataFrame:
    """Each other model against `base` on the units both have (rows of `per_unit`, e.g. per_unit_means).

    Per model: `n_units`, `mean_base`, `mean_model`, `mean_diff` (model - base, mean over units)
    with its bootstrap CI over units (`boot`), `wilcoxon_stat` and `p_wilcoxon` (Wilcoxon
    signed-rank on the per-unit differences, zeros dropped), `rank_biserial` (its effect size,
    positive when the model is higher), `p_permutation` (sign-flip test of the mean difference,
    seeded with boot.seed; `permutation_exact` says whether all sign patterns were enumerated).
    `p_wilcoxon_adj` and `p_permutation_adj` are corrected over the models of the call
    (`correction`); `significant` is p_wilcoxon_adj < alpha.
    """
    if base not in per_unit.columns:
        raise KeyError(f"base model {base!r} is not a column; columns: {list(per_unit.columns)}")
    others = [c for c in per_unit.columns if c != base] if others is None else list(others)
    rows = []
    for model in others:
        pair = per_unit[[base, model]].dropna()
        d = (pair[model] - pair[base]).to_numpy(np.float64)
        n = d.size
        summary = UnitSummary(np.ones(n), d)
        mean_ci = bootstrap_units(summary, ("mean",), boot=boot)["mean"]
        if np.any(d != 0):
            wilcoxon = scipy_stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
            w_stat, p_wilcoxon = float(wilcoxon.statistic), float(wilcoxon.pvalue)
        else:  # identical on every unit (or no units): nothing to test
            w_stat, p_wilcoxon = np.nan, (1.0 if n else np.nan)
        p_perm, exact = sign_flip_pvalue(d, n_perm, boot.seed)
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
