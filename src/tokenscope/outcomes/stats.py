"""Outcome statistics with the prompt as the unit: accuracy, pass@k, and per-generation token
statistics against correctness (AUROC), per model and across the checkpoints of a group.

Generations of one prompt are not independent draws (a hard prompt fails every sample), so every
confidence interval here is a percentile bootstrap that resamples prompts: a resample is a vector
of draw counts per prompt, shared by every statistic and every model of a group, so comparisons
between checkpoints (differences of AUROC, of accuracy) are paired on the same drawn prompts. The
draws and the percentile interval are those of tokenscope.analysis.stats.resampling.

- pass@k of a prompt with n samples of which c are correct is the unbiased estimator
  1 - C(n - c, k) / C(n, k) (Chen et al. 2021, arXiv 2107.03374); a model's pass@k is its mean over
  prompts, pass@1 = accuracy = the mean over prompts of c / n.
- The per-generation token statistics (`GENERATION_STATISTICS`) are aggregated from the per-token
  tables in DuckDB (`generation_statistics`, GROUP BY model, prompt_id, sample): only one row per
  generation reaches Python.
- AUROC of a statistic is its Mann-Whitney probability as a detector of *incorrect* answers:
  P(statistic of an incorrect generation > that of a correct one) + P(tie) / 2, over all pairs of
  generations of the model; 0.5 is no information, above 0.5 higher values flag wrong answers.
  In a resample a prompt drawn w times counts each of its generations w times.

Only generations whose `correct` is not null (their prompt has an answer) take part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.special import gammaln

from tokenscope.analysis.stats.resampling import draw_blocks, percentile_interval
from tokenscope.duckdb_tables import connect, parquet_sql, sql_literal, sql_number
from tokenscope.errors import TokenscopeError
from tokenscope.outcomes.fit import fit_entropy_performance, fit_table, resampled_fits
from tokenscope.outcomes.options import OutcomeOptions, pass_at_k_values

# Per-generation statistics, in table order, with their labels.
GENERATION_STATISTICS: dict[str, str] = {
    "mean_entropy": "Mean token entropy (nats)",
    "p90_entropy": "p90 token entropy (nats)",
    "share_high_entropy": "Share of tokens above the base's entropy quantile",
    "max_surprisal": "Max surprisal −log p (nats)",
    "length": "Length (generated tokens)",
}
GENERATION_KEYS: tuple[str, ...] = ("model", "prompt_id", "sample")


# --- pass@k and AUROC on arrays ---------------------------------------------------------------------


def pass_at_k(n: np.ndarray | Sequence[int], c: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    """Per prompt, the unbiased pass@k estimator 1 - C(n - c, k) / C(n, k) from n samples of which
    c are correct; NaN where n < k. Computed through log-gamma (no overflow for large n)."""
    n_arr = np.asarray(n, dtype=np.float64)
    c_arr = np.asarray(c, dtype=np.float64)
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("need 0 <= c <= n for every prompt")
    wrong = n_arr - c_arr
    with np.errstate(invalid="ignore"):
        log_ratio = gammaln(wrong + 1) - gammaln(wrong - k + 1) - gammaln(n_arr + 1) + gammaln(n_arr - k + 1)
    value = np.where(wrong < k, 1.0, 1.0 - np.exp(np.where(wrong < k, 0.0, log_ratio)))
    return np.where(n_arr < k, np.nan, value)


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort order of `scores` and the start index of each run of equal sorted values."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if ordered.size else np.zeros(0, int)
    return order, starts


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of `scores` for the positive class with per-item weights, for each row of `weights`
    ([resamples, items]): sum over (positive i, negative j) of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2)
    divided by (sum of positive weights) x (sum of negative weights). NaN where either class has
    no weight. With unit weights it is the Mann-Whitney U of the positives over n_pos x n_neg."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if scores.size == 0:
        return np.full(weights.shape[0], np.nan)
    order, starts = _tie_groups(scores)
    w = weights[:, order]
    pos = positive[order]
    pos_groups = np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1)
    neg_groups = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)
    neg_below = np.cumsum(neg_groups, axis=1) - neg_groups
    numerator = (pos_groups * (neg_below + 0.5 * neg_groups)).sum(axis=1)
    denominator = pos_groups.sum(axis=1) * neg_groups.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def auroc(scores: np.ndarray | Sequence[float], positive: np.ndarray | Sequence[bool]) -> float:
    """AUROC of `scores` for the positive class (ties count half); NaN if a class is empty."""
    scores_arr = np.asarray(scores, dtype=np.float64)
    return float(weighted_auroc(scores_arr, np.asarray(positive, dtype=bool), np.ones((1, scores_arr.size)))[0])


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of a difference being 0: twice the smaller share of
    finite resampled differences on either side of 0 (at most 1); NaN without finite resamples."""
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return np.nan
    return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))


# --- Per-generation statistics in DuckDB -----------------------------------------------------------


def _columns_of(con: duckdb.DuckDBPyConnection, paths: str | Path | Sequence[str | Path]) -> list[str]:
    return list(con.sql(f"SELECT * FROM {parquet_sql(paths)} LIMIT 0").columns)


def base_entropy_threshold(
    con: duckdb.DuckDBPyConnection, base_tokens: str | Path | Sequence[str | Path], quantile: float
) -> float:
    """The base model's `quantile` of token entropy over its own generated tokens (quantile_cont,
    numpy's linear interpolation; NaN left out); NaN when it has no finite entropy."""
    sql = (
        f"SELECT quantile_cont(v, {float(quantile)!r}) FROM "
        f"(SELECT {sql_number('entropy')} AS v FROM {parquet_sql(base_tokens)}) WHERE v IS NOT NULL"
    )
    rows = con.execute(sql).fetchall()
    value = rows[0] if rows else None
    return np.nan if value is None or value[0] is None else float(value[0])


def generation_statistics(
    tokens: Mapping[str, str | Path | Sequence[str | Path]],
    generations: Mapping[str, str | Path | Sequence[str | Path]],
    base: str,
    *,
    quantile: float = 0.8,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pd.DataFrame, float]:
    """One row per generation of every model (in `generations`' order of models), with `correct`
    and the token statistics of its own tokens, and the base's entropy threshold.

    `tokens[model]`: the model's per-token table of its own generations; `generations[model]`: its
    generations table (with `correct`). Columns: model, prompt_id, sample, correct (bool, null where
    the prompt has no answer), mean_entropy, p90_entropy (quantile_cont), share_high_entropy (share
    of its tokens with entropy above `threshold` = the base's `quantile` of entropy over all its
    generated tokens of the set), max_surprisal (max of -logprob), length (`n_tokens`), and
    entropy_sum, entropy_count (finite entropies: sum and count, for pooled means). NaN entropies
    are left out; a generation without tokens gets nulls. Aggregated in DuckDB; only these rows
    reach Python. Rows are sorted by model order, prompt_id, sample.
    """
    con = connect() if con is None else con
    models = list(generations)
    missing = [m for m in models if m not in tokens]
    if missing or base not in tokens:
        raise ValueError(f"per-token tables missing for {sorted({*missing, base} - set(tokens))}")
    threshold = base_entropy_threshold(con, tokens[base], quantile)
    if not np.isfinite(threshold):
        raise TokenscopeError(f"no finite token entropy in the generations of the base model {base!r}")
    frames = []
    for model in models:
        if "correct" not in _columns_of(con, generations[model]):
            raise TokenscopeError(
                f"the generations table of model {model!r} has no 'correct' column (answers): regenerate it"
            )
        entropy, surprisal = sql_number("entropy"), f"-{sql_number('logprob')}"
        frames.append(
            con.sql(
                f"""WITH t AS (
                    SELECT prompt_id, sample, {entropy} AS e, {surprisal} AS s
                    FROM {parquet_sql(tokens[model])}),
                agg AS (
                    SELECT prompt_id, sample, avg(e) AS mean_entropy, quantile_cont(e, 0.9) AS p90_entropy,
                           avg(CASE WHEN e IS NULL THEN NULL WHEN e > {sql_literal(threshold)} THEN 1.0 ELSE 0.0 END)
                               AS share_high_entropy,
                           max(s) AS max_surprisal, sum(e) AS entropy_sum, count(e) AS entropy_count
                    FROM t GROUP BY prompt_id, sample)
                SELECT {sql_literal(model)} AS model, CAST(g.prompt_id AS VARCHAR) AS prompt_id,
                       CAST(g.sample AS INTEGER) AS sample, CAST(g.correct AS BOOLEAN) AS correct,
                       a.mean_entropy, a.p90_entropy, a.share_high_entropy, a.max_surprisal,
                       CAST(g.n_tokens AS DOUBLE) AS length, coalesce(a.entropy_sum, 0.0) AS entropy_sum,
                       coalesce(a.entropy_count, 0) AS entropy_count
                FROM {parquet_sql(generations[model])} g
                LEFT JOIN agg a ON a.prompt_id = g.prompt_id AND a.sample = g.sample
                ORDER BY g.prompt_id, g.sample"""
            ).df()
        )
    table = pd.concat(frames, ignore_index=True)
    table["correct"] = table["correct"].astype("boolean")
    table["entropy_count"] = table["entropy_count"].astype(np.int64)
    return table, threshold


# --- Outcome tables ---------------------------------------------------------------------------------


@dataclass
class _Model:
    """One model's generations with answers, indexed by unit (prompt) number."""

    n: np.ndarray  # samples per unit
    c: np.ndarray  # correct samples per unit
    entropy_sum: np.ndarray
    entropy_count: np.ndarray
    generation_unit: np.ndarray  # unit index of each generation
    incorrect: np.ndarray  # per generation
    statistics: dict[str, np.ndarray] = field(default_factory=dict)  # per generation


def _models(per_generation: pd.DataFrame, models: Sequence[str]) -> tuple[list[str], dict[str, _Model]]:
    answered = per_generation[per_generation["correct"].notna()]
    units = sorted(set(answered["prompt_id"].astype(str)))
    index = {unit: i for i, unit in enumerate(units)}
    result = {}
    for model in models:
        rows = answered[answered["model"] == model]
        unit = rows["prompt_id"].astype(str).map(index).to_numpy(dtype=np.int64)
        correct = rows["correct"].to_numpy(dtype=bool)
        n_units = len(units)
        result[model] = _Model(
            n=np.bincount(unit, minlength=n_units).astype(np.float64),
            c=np.bincount(unit, weights=correct.astype(np.float64), minlength=n_units),
            entropy_sum=np.bincount(unit, weights=rows["entropy_sum"].to_numpy(np.float64), minlength=n_units),
            entropy_count=np.bincount(unit, weights=rows["entropy_count"].to_numpy(np.float64), minlength=n_units),
            generation_unit=unit,
            incorrect=~correct,
            statistics={name: rows[name].to_numpy(dtype=np.float64) for name in GENERATION_STATISTICS},
        )
    return units, result


def _mean(weights: np.ndarray, values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per row of `weights`: the weighted mean of `values` over present units."""
    total = weights @ present.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights @ np.where(present, values, 0.0)) / np.where(total > 0, total, 1.0), np.nan)


def _ratio(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights @ sums) / np.where(total > 0, total, 1.0), np.nan)


def _measures(model: _Model, weights: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Accuracy, mean entropy, pass@k and AUROC of each statistic, per row of `weights` (units)."""
    present = model.n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(present, model.c / np.where(present, model.n, 1.0), np.nan)
    out = {
        "accuracy": _mean(weights, share, present),
        "mean_entropy": _ratio(weights, model.entropy_sum, model.entropy_count),
    }
    for k in ks:
        values = pass_at_k(model.n, model.c, k)
        out[f"pass@{k}"] = _mean(weights, values, present & np.isfinite(values))
    generation_weights = weights[:, model.generation_unit]
    for name, values in model.statistics.items():
        valid = np.isfinite(values) | np.isposinf(values)
        out[f"auroc:{name}"] = weighted_auroc(values[valid], model.incorrect[valid], generation_weights[:, valid])
    return out


def outcome_tables(
    per_generation: pd.DataFrame, models: Sequence[str], options: OutcomeOptions, threshold: float = np.nan
) -> dict[str, pd.DataFrame]:
    """The outcome tables of a group's models (the first is the base, checkpoint index 0).

    `per_generation`: `generation_statistics`' rows; `threshold`: the base's entropy threshold of
    share_high_entropy (reported in the auroc table). Tables (columns: docs/schema.md):
    accuracy, pass_at_k, auroc, auroc_paired (each checkpoint against the base), entropy_fit,
    entropy_fit_points and entropy_fit_curve (tokenscope.outcomes.fit). Every CI resamples the
    prompts with answers, with the same draws for every model and statistic.
    """
    units, data = _models(per_generation, models)
    if not units:
        raise TokenscopeError("no generation has a correct/incorrect outcome: the prompt set has no answers")
    ks = list(options.pass_at_k)
    n_units = len(units)
    point = {
        model: {key: float(v[0]) for key, v in _measures(data[model], np.ones((1, n_units)), ks).items()}
        for model in models
    }
    width = max([n_units, *(d.generation_unit.size for d in data.values())])
    resampled: dict[str, dict[str, list[np.ndarray]]] = {model: {} for model in models}
    # The draws of tokenscope.analysis.stats, as float64 (exact counts), in blocks of resamples x
    # width, the widest matrix a block is expanded to (one column per generation).
    for block in draw_blocks(n_units, options.n_boot, options.seed, width=width, dtype=np.float64):
        for model in models:
            for key, values in _measures(data[model], block, ks).items():
                resampled[model].setdefault(key, []).append(values)
    boot = {model: {key: np.concatenate(parts) for key, parts in keys.items()} for model, keys in resampled.items()}
    base = models[0]
    ci = options.ci

    accuracy_rows, pass_rows, auroc_rows, paired_rows = [], [], [], []
    for index, model in enumerate(models):
        d = data[model]
        low, high = percentile_interval(boot[model]["accuracy"], ci)
        diff = boot[model]["accuracy"] - boot[base]["accuracy"]
        diff_low, diff_high = percentile_interval(diff, ci)
        h_low, h_high = percentile_interval(boot[model]["mean_entropy"], ci)
        accuracy_rows.append(
            {
                "checkpoint": index,
                "model": model,
                "estimate": point[model]["accuracy"],
                "ci_low": low,
                "ci_high": high,
                "n_units": int(np.count_nonzero(d.n)),
                "n_generations": int(d.n.sum()),
                "n_correct": int(d.c.sum()),
                "diff_vs_base": point[model]["accuracy"] - point[base]["accuracy"],
                "diff_ci_low": diff_low,
                "diff_ci_high": diff_high,
                "mean_entropy": point[model]["mean_entropy"],
                "entropy_ci_low": h_low,
                "entropy_ci_high": h_high,
            }
        )
        for k in ks:
            low, high = percentile_interval(boot[model][f"pass@{k}"], ci)
            pass_rows.append(
                {
                    "checkpoint": index,
                    "model": model,
                    "k": k,
                    "estimate": point[model][f"pass@{k}"],
                    "ci_low": low,
                    "ci_high": high,
                    "n_units": int(np.count_nonzero(d.n >= k)),
                }
            )
        for name in GENERATION_STATISTICS:
            values = d.statistics[name]
            valid = np.isfinite(values) | np.isposinf(values)
            key = f"auroc:{name}"
            low, high = percentile_interval(boot[model][key], ci)
            auroc_rows.append(
                {
                    "checkpoint": index,
                    "model": model,
                    "statistic": name,
                    "auroc": point[model][key],
                    "ci_low": low,
                    "ci_high": high,
                    "n_units": int(np.unique(d.generation_unit[valid]).size),
                    "n_correct": int(np.count_nonzero(valid & ~d.incorrect)),
                    "n_incorrect": int(np.count_nonzero(valid & d.incorrect)),
                    "mean_correct": _finite_mean(values[valid & ~d.incorrect]),
                    "mean_incorrect": _finite_mean(values[valid & d.incorrect]),
                    "high_entropy_threshold": threshold,
                }
            )
            if index > 0:
                diff = boot[model][key] - boot[base][key]
                low, high = percentile_interval(diff, ci)
                paired_rows.append(
                    {
                        "checkpoint": index,
                        "model": model,
                        "base": base,
                        "statistic": name,
                        "auroc_base": point[base][key],
                        "auroc_model": point[model][key],
                        "diff": point[model][key] - point[base][key],
                        "ci_low": low,
                        "ci_high": high,
                        "p_bootstrap": bootstrap_p_value(diff),
                        "n_units": n_units,
                    }
                )

    accuracy = pd.DataFrame(accuracy_rows)
    fit = fit_entropy_performance(accuracy["mean_entropy"].to_numpy(), accuracy["estimate"].to_numpy())
    boot_fits = resampled_fits(
        np.stack([boot[m]["mean_entropy"] for m in models], axis=1),
        np.stack([boot[m]["accuracy"] for m in models], axis=1),
    )
    fit_tables = fit_table(fit, boot_fits, accuracy, ci=ci, n_units=n_units)
    paired_columns = [
        "checkpoint",
        "model",
        "base",
        "statistic",
        "auroc_base",
        "auroc_model",
        "diff",
        "ci_low",
        "ci_high",
        "p_bootstrap",
        "n_units",
    ]
    return {
        "accuracy": accuracy,
        "pass_at_k": pd.DataFrame(pass_rows),
        "auroc": pd.DataFrame(auroc_rows),
        "auroc_paired": pd.DataFrame(paired_rows, columns=paired_columns),
        **fit_tables,
    }


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def outcome_statistics(
    tokens: Mapping[str, str | Path | Sequence[str | Path]],
    generations: Mapping[str, str | Path | Sequence[str | Path]],
    models: Sequence[str],
    options: OutcomeOptions,
    *,
    prompt_set: str = "",
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per-generation statistics and the outcome tables of a group (the first model is the base).

    A prompt set none of whose generations has an outcome (no answers) is a one-line error naming it.
    """
    per_generation, threshold = generation_statistics(
        tokens, {m: generations[m] for m in models}, models[0], quantile=options.high_entropy_quantile, con=con
    )
    if not per_generation["correct"].notna().any():
        raise TokenscopeError(
            f"outcomes.prompt_sets: prompt set {prompt_set!r} has no answers (no generation has a 'correct' value)"
        )
    return per_generation, outcome_tables(per_generation, models, options, threshold)


__all__ = [
    "GENERATION_STATISTICS",
    "OutcomeOptions",
    "auroc",
    "base_entropy_threshold",
    "bootstrap_p_value",
    "generation_statistics",
    "outcome_statistics",
    "outcome_tables",
    "pass_at_k",
    "pass_at_k_values",
    "weighted_auroc",
]
