"""The resampling core: units drawn with replacement, statistics of per-unit summaries on each
resample, and the percentile interval. tokenscope.outcomes draws its resamples here too.

A resample is a vector of draw counts per unit; its pooled mean is exact (sum of drawn sums / sum
of drawn counts) and its pooled histogram is draw counts @ per-unit histograms (a float32 matrix
product over blocks of resamples; counts are exact below 2^24 tokens per bin). How a resampled
quantile is read off the histogram: _grid_quantiles.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.errors import ConfigError

# Resamples are drawn in blocks of at most BLOCK_CELLS resamples x units (32 MB of int64); draw
# tables of at most _CACHED_DRAW_CELLS cells are kept for the next estimate of the same size.
BLOCK_CELLS = 1 << 22
_CACHED_DRAW_CELLS = 1 << 23
# Pooled histograms are computed for at most _POOLED_CELLS resamples x bins at once (16 MB float32).
_POOLED_CELLS = 1 << 22


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap percentile interval and what it was computed from.

    n_units counts the units (prompts) that hold at least one of the n_tokens tokens.
    ci_resolution bounds how far ci_low and ci_high can be from the bounds an exact token-level
    bootstrap with the same draws gives: the histogram bin width for quantiles, 0 where exact.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_units: int
    n_tokens: int
    ci_resolution: float = 0.0


ESTIMATE_COLUMNS: tuple[str, ...] = tuple(Estimate.__dataclass_fields__)


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


@dataclass(frozen=True)
class UnitSummary:
    """What the bootstrap of one series (a metric of one model) needs, per unit.

    `counts` and `sums` (float64, one entry per unit) give means; statistics of a ratio (a share)
    put its numerator in `sums` and denominator in `counts`, and a unit with count 0 still takes
    part in the draws. `histogram` ([units, bins] float32, bin j covering [edges[j], edges[j + 1]))
    gives quantiles, whose exact point values are in `quantiles` (level -> value).
    """

    counts: np.ndarray
    sums: np.ndarray
    histogram: np.ndarray | None = None
    edges: np.ndarray | None = None
    quantiles: Mapping[float, float] = field(default_factory=dict)


def resample_counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_units] how many times each unit is drawn when drawing n_units with replacement."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = (draws + (np.arange(n_boot) * n_units)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units)


def draw_blocks(
    n_units: int, n_boot: int, seed: int, *, width: int | None = None, dtype: DTypeLike = np.float32
) -> Iterator[np.ndarray]:
    """The draw counts ([resamples, n_units], as `dtype`) of n_boot resamples of n_units units drawn
    with replacement, in blocks of at most BLOCK_CELLS / `width` resamples (`width`: the widest
    matrix a block is expanded to, e.g. one column per generation; n_units by default). The same
    seed and sizes give the same draws."""
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_CELLS // max(width or n_units, 1))
    for begin in range(0, n_boot, block):
        yield resample_counts(n_units, min(block, n_boot - begin), rng).astype(dtype)


@functools.lru_cache(maxsize=4)
def _cached_draws(n_units: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    blocks = tuple(draw_blocks(n_units, n_boot, seed))
    for block in blocks:
        block.flags.writeable = False
    return blocks


def _draws(n_units: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """draw_blocks (float32), reused across the many estimates of the same size (same seed: same draws)."""
    if n_units * n_boot <= _CACHED_DRAW_CELLS:
        return iter(_cached_draws(n_units, n_boot, seed))
    return draw_blocks(n_units, n_boot, seed)


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """The percentile interval of the finite values (NaN, NaN when there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (np.nan, np.nan)
    tail = (1 - ci) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return float(low), float(high)


def _grid_quantiles(
    pooled: np.ndarray, levels: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[levels, resamples] quantiles of each resample's pooled histogram (rows of `pooled`), the
    width of the widest bin each one used, and the bins of the two order statistics it used.

    numpy's linear interpolation between the order statistics around (total - 1) q, where the
    k-th smallest token (0-based) is placed in its bin, the bin whose cumulative count first
    exceeds k, at (k - tokens in earlier bins + 0.5) / tokens in the bin of the bin's width. The
    exact k-th smallest value lies in the same bin, so each quantile is within the width of the
    bins it used of the exact one. NaN for a resample without tokens.
    """
    cumulative = np.cumsum(pooled, axis=1, dtype=np.float64)
    n_rows, n_bins = cumulative.shape
    totals = cumulative[:, -1]
    valid = totals > 0
    position = np.maximum(totals - 1, 0)[None, :] * levels[:, None]
    below = np.floor(position)
    above = np.minimum(below + 1, np.maximum(totals - 1, 0)[None, :])
    # One sorted array of all rows (each shifted past the previous row's total) for one searchsorted.
    offsets = np.arange(n_rows, dtype=np.float64) * (float(totals.max(initial=0.0)) + 1)
    flat = (cumulative + offsets[:, None]).ravel()
    rows = np.broadcast_to(np.arange(n_rows), position.shape)

    widths = np.diff(edges)

    def order_statistic(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.searchsorted(flat, k + offsets[None, :], side="right") - rows * n_bins
        bins = np.clip(index, 0, n_bins - 1)
        before = np.where(bins > 0, cumulative[rows, np.maximum(bins - 1, 0)], 0.0)
        count = pooled[rows, bins].astype(np.float64)
        return edges[bins] + (k - before + 0.5) / np.where(count > 0, count, 1.0) * widths[bins], bins

    (lower, lower_bin), (upper, upper_bin) = order_statistic(below), order_statistic(above)
    values = np.where(valid[None, :], lower + (position - below) * (upper - lower), np.nan)
    used = np.where(valid[None, :], np.maximum(widths[lower_bin], widths[upper_bin]), 0.0)
    return values, used, np.where(valid[None, :], lower_bin, n_bins), np.where(valid[None, :], upper_bin, -1)


def _resampled_means(block: np.ndarray, summary: UnitSummary) -> np.ndarray:
    """The pooled mean of each resample (row of draw counts) of the block; NaN where none is drawn."""
    weights = block.astype(np.float64)
    totals, sums = weights @ summary.counts, weights @ summary.sums
    return np.where(totals > 0, sums / np.where(totals > 0, totals, 1.0), np.nan)


def _widen_support(
    support: dict[str, tuple[float, float]],
    names: Sequence[str],
    edges: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
) -> None:
    """Widen each quantile's support to the bins first[i].min() .. last[i].max() (none: no tokens)."""
    for i, name in enumerate(names):
        low, high = int(first[i].min(initial=edges.size)), int(last[i].max(initial=-1))
        if low <= high:
            known = support.get(name, (np.inf, -np.inf))
            support[name] = (min(known[0], float(edges[low])), max(known[1], float(edges[high + 1])))


def _resampled_quantiles(
    block: np.ndarray,
    summary: UnitSummary,
    names: Sequence[str],
    support: dict[str, tuple[float, float]] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each run of resamples of the block: ([quantiles, resamples] values, [quantiles] widest
    bin used), pooling at most _POOLED_CELLS resamples x bins at once; widens `support` if given."""
    assert summary.histogram is not None and summary.edges is not None
    levels = np.array([statistic_quantile(name) for name in names], dtype=np.float64)
    rows = max(1, _POOLED_CELLS // summary.histogram.shape[1])
    for begin in range(0, block.shape[0], rows):
        pooled = block[begin : begin + rows] @ summary.histogram
        values, widths, first, last = _grid_quantiles(pooled, levels, summary.edges)
        if support is not None:
            _widen_support(support, names, summary.edges, first, last)
        yield values, widths.max(axis=1)


def resampled_statistics(
    summary: UnitSummary,
    statistics: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    support: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each statistic on each of n_boot resamples of the summary's units (NaN: no tokens drawn), and
    its resolution: how far any resampled value can be from the exact token-level one (the widest
    histogram bin a resampled quantile used; 0 for means, which are exact). `support`, when given,
    receives for each quantile the range of the bins holding the order statistics it used."""
    levels = {name: statistic_quantile(name) for name in statistics}
    mean_names = [name for name, q in levels.items() if q is None]
    quantile_names = [name for name, q in levels.items() if q is not None]
    if quantile_names and (summary.histogram is None or summary.edges is None):
        raise ValueError(f"quantiles {quantile_names} need a histogram")
    means: list[np.ndarray] = []
    quantiles: list[np.ndarray] = []
    used: list[np.ndarray] = []
    for block in _draws(summary.counts.size, n_boot, seed):
        if mean_names:
            means.append(_resampled_means(block, summary))
        if quantile_names:
            for values, widest in _resampled_quantiles(block, summary, quantile_names, support):
                quantiles.append(values)
                used.append(widest)
    result: dict[str, np.ndarray] = {}
    resolution = dict.fromkeys(mean_names, 0.0)
    if means:
        result.update({name: np.concatenate(means) for name in mean_names})
    if quantile_names:
        stacked, widest = np.concatenate(quantiles, axis=1), np.max(used, axis=0)
        result.update({name: stacked[i] for i, name in enumerate(quantile_names)})
        resolution.update({name: float(widest[i]) for i, name in enumerate(quantile_names)})
    return {name: result[name] for name in statistics}, resolution


def bootstrap_units(
    summary: UnitSummary, statistics: Sequence[str] = ("mean",), *, boot: BootstrapOptions = BootstrapOptions()
) -> dict[str, Estimate]:
    """Point estimate and percentile CI of each statistic, resampling the summary's units."""
    n_tokens = int(round(float(summary.counts.sum())))
    n_units = int(np.count_nonzero(summary.counts))
    levels = {name: statistic_quantile(name) for name in statistics}
    if n_tokens == 0 or summary.counts.size == 0:
        return {
            name: Estimate(np.nan, np.nan, np.nan, n_units, n_tokens, 0.0 if q is None else np.nan)
            for name, q in levels.items()
        }
    computable = [name for name, q in levels.items() if q is None or summary.histogram is not None]
    resampled, resolution = (
        resampled_statistics(summary, computable, n_boot=boot.n_boot, seed=boot.seed) if computable else ({}, {})
    )
    estimates = {}
    for name, q in levels.items():
        point = float(summary.sums.sum() / summary.counts.sum()) if q is None else float(summary.quantiles[q])
        low, high = percentile_interval(resampled.get(name, np.array([])), boot.ci)
        estimates[name] = Estimate(point, low, high, n_units, n_tokens, resolution.get(name, np.nan))
    return estimates
