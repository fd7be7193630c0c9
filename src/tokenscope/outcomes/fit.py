"""The entropy-performance fit over a checkpoint series: R = -a exp(H) + b (arXiv 2505.22617).

R is a checkpoint's accuracy and H the mean token entropy of its own generations (pooled over the
tokens of the prompts with answers). The model is linear in its parameters with x = exp(H), so it
is fitted by ordinary least squares of R on exp(H): a = -slope, b = intercept (exact, no iterative
optimiser). CIs come from the prompt bootstrap of tokenscope.outcomes.stats: each resample of
prompts gives every checkpoint a new (H, R) and is fitted again, so the intervals carry the
uncertainty of the measurements over prompts, not of the functional form. With few checkpoints
(fewer than DESCRIPTIVE_BELOW) the fit describes the points rather than testing a law: with two it
interpolates them exactly. Tables and figures say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tokenscope.analysis.stats.resampling import percentile_interval

# Fits over fewer checkpoints than this are labelled descriptive.
DESCRIPTIVE_BELOW = 5
# Points of the fitted curve in the entropy_fit_curve table, over the observed entropies +- 10 %.
CURVE_POINTS = 50


@dataclass(frozen=True)
class EntropyFit:
    """R = -a exp(H) + b fitted to `n_points` finite (H, R) points; NaN parameters with fewer than
    two points of distinct H. r_squared: 1 - residual / total sum of squares (NaN when R is constant)."""

    a: float
    b: float
    n_points: int
    r_squared: float
    rmse: float

    def predict(self, entropy: np.ndarray | float) -> np.ndarray:
        return -self.a * np.exp(np.asarray(entropy, dtype=np.float64)) + self.b

    @property
    def descriptive(self) -> bool:
        return self.n_points < DESCRIPTIVE_BELOW


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise OLS of y on x ([rows, points], NaN points left out): (slope, intercept), NaN where
    a row has fewer than two finite points or no spread in x."""
    valid = np.isfinite(x) & np.isfinite(y)
    count = valid.sum(axis=1)
    xs, ys = np.where(valid, x, 0.0), np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = xs.sum(axis=1) / count
        mean_y = ys.sum(axis=1) / count
        dx = np.where(valid, x - mean_x[:, None], 0.0)
        dy = np.where(valid, y - mean_y[:, None], 0.0)
        sxx = (dx * dx).sum(axis=1)
        slope = (dx * dy).sum(axis=1) / sxx
        scale = np.maximum(np.abs(xs).max(axis=1, initial=0.0), 1e-300)
        degenerate = (count < 2) | (sxx <= (1e-12 * scale) ** 2 * np.maximum(count, 1))
        slope = np.where(degenerate, np.nan, slope)
        intercept = np.where(degenerate, np.nan, mean_y - slope * mean_x)
    return slope, intercept


def fit_entropy_performance(entropy: np.ndarray, performance: np.ndarray) -> EntropyFit:
    """Fit R = -a exp(H) + b by least squares to the finite points (H = entropy, R = performance)."""
    h = np.asarray(entropy, dtype=np.float64)
    r = np.asarray(performance, dtype=np.float64)
    if h.shape != r.shape:
        raise ValueError(f"entropy and performance differ in shape: {h.shape} vs {r.shape}")
    slope, intercept = _least_squares(np.exp(h)[None, :], r[None, :])
    valid = np.isfinite(h) & np.isfinite(r)
    a, b = -float(slope[0]), float(intercept[0])
    n = int(valid.sum())
    if not np.isfinite(a):
        return EntropyFit(np.nan, np.nan, n, np.nan, np.nan)
    residual = r[valid] - (-a * np.exp(h[valid]) + b)
    ss_res = float((residual**2).sum())
    ss_tot = float(((r[valid] - r[valid].mean()) ** 2).sum())
    r_squared = 1 - ss_res / ss_tot if ss_tot > 0 else np.nan
    return EntropyFit(a, b, n, r_squared, float(np.sqrt(ss_res / n)))


def resampled_fits(entropy: np.ndarray, performance: np.ndarray) -> dict[str, np.ndarray]:
    """The fit on each resample: rows of `entropy` and `performance` ([resamples, checkpoints]).
    Returns {"a": [resamples], "b": [resamples]} (NaN where a resample cannot be fitted)."""
    h = np.atleast_2d(np.asarray(entropy, dtype=np.float64))
    r = np.atleast_2d(np.asarray(performance, dtype=np.float64))
    slope, intercept = _least_squares(np.exp(h), r)
    return {"a": -slope, "b": intercept}


def fit_table(
    fit: EntropyFit, boot: dict[str, np.ndarray], accuracy: pd.DataFrame, *, ci: float, n_units: int
) -> dict[str, pd.DataFrame]:
    """The fit's tables from the point fit, its resampled parameters and the accuracy table
    (`checkpoint`, `model`, `estimate` = R, `ci_low`, `ci_high`, `mean_entropy` = H and its CI):

    entropy_fit: one row per parameter (a, b): estimate, ci_low, ci_high, and for the fit
      n_checkpoints, n_units (prompts resampled), r_squared, rmse, descriptive;
    entropy_fit_points: per checkpoint H and R with their CIs, the fitted R and the residual R - fitted;
    entropy_fit_curve: the fitted R over a grid of H with its pointwise bootstrap band.
    """
    rows = []
    for name in ("a", "b"):
        low, high = percentile_interval(boot[name], ci)
        rows.append(
            {
                "parameter": name,
                "estimate": getattr(fit, name),
                "ci_low": low,
                "ci_high": high,
                "n_checkpoints": fit.n_points,
                "n_units": n_units,
                "r_squared": fit.r_squared,
                "rmse": fit.rmse,
                "descriptive": fit.descriptive,
            }
        )
    h = accuracy["mean_entropy"].to_numpy(dtype=np.float64)
    fitted = fit.predict(h)
    points = pd.DataFrame(
        {
            "checkpoint": accuracy["checkpoint"],
            "model": accuracy["model"],
            "entropy": h,
            "entropy_ci_low": accuracy["entropy_ci_low"],
            "entropy_ci_high": accuracy["entropy_ci_high"],
            "accuracy": accuracy["estimate"],
            "accuracy_ci_low": accuracy["ci_low"],
            "accuracy_ci_high": accuracy["ci_high"],
            "fitted": fitted,
            "residual": accuracy["estimate"].to_numpy(dtype=np.float64) - fitted,
        }
    )
    finite = h[np.isfinite(h)]
    curve = pd.DataFrame(columns=["entropy", "fitted", "ci_low", "ci_high"])
    if finite.size and np.isfinite(fit.a):
        span = max(float(finite.max() - finite.min()), 1e-6)
        grid = np.linspace(finite.min() - 0.1 * span, finite.max() + 0.1 * span, CURVE_POINTS)
        usable = np.isfinite(boot["a"]) & np.isfinite(boot["b"])
        band = -boot["a"][usable, None] * np.exp(grid)[None, :] + boot["b"][usable, None]
        bounds = np.array([percentile_interval(band[:, j], ci) for j in range(grid.size)]).reshape(grid.size, 2)
        curve = pd.DataFrame(
            {"entropy": grid, "fitted": fit.predict(grid), "ci_low": bounds[:, 0], "ci_high": bounds[:, 1]}
        )
    return {"entropy_fit": pd.DataFrame(rows), "entropy_fit_points": points, "entropy_fit_curve": curve}
