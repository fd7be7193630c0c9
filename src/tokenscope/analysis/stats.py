"""Statistics whose unit is the prompt (or prompt x sample), not the token, out of core.

Tokens of one generation are not independent: a prompt that makes a model hesitate raises the
entropy of all its tokens together. Treating tokens as independent draws makes confidence
intervals far too narrow and tests far too eager. So:

- confidence intervals come from a cluster bootstrap: units (prompts) are drawn with replacement
  and a statistic is recomputed on the pooled tokens of the drawn units (a unit drawn twice counts
  twice); the interval is the percentile interval of the resampled statistic;
- tests between two models compare per-unit means on the same units (paired);
- every random function takes a `seed`, and the same seed gives the same numbers. Each estimate
  (a group, a metric, a comparison) draws from a fresh generator seeded with `seed`, so its numbers
  do not depend on which other groups or models are in the same call. Units are numbered in the
  sorted order of their key, so the numbers do not depend on the order of the rows either.

Tables are read through DuckDB (tokenscope.duckdb_tables): each statistic first aggregates the tokens
to per-unit summaries (`UnitSummary`: token count and sum per unit, and for quantiles a per-unit
histogram), and the bootstrap works on those only, so its cost does not depend on the number of
tokens. A resample is a vector of draw counts per unit; its pooled mean is exact (sum of drawn
sums / sum of drawn counts) and its pooled histogram is draw counts @ per-unit histograms (a
float32 matrix product over blocks of resamples; counts are exact below 2^24 tokens per bin).
A resample's quantile interpolates linearly within the bins of the histogram's cumulative count
that hold the order statistics it needs; the exact order statistics lie in those same bins, so
each resampled quantile, and each CI bound, is within the width of the bins it used of the exact
token-level value with the same draws. The grid comes in two passes: `bins` uniform bins over the
series' finite [min, max] locate the bins the resampled quantiles use, then `bins` bins over each
of those ranges (one bin over each gap between them) give the CI. The widest bin used is reported
per row as `ci_resolution` (0 for means and shares, which are exact); it is typically 10^-6 to
10^-4 of the range. Point estimates are exact (DuckDB's quantile_cont on the tokens: numpy's
default linear interpolation). Values of +-inf count in the end bins; NaN values are left out.

Statistics are named: "mean", "median" and "pNN" (the NN-th percentile, e.g. "p90", "p99.9").
Tables are pandas DataFrames of aggregated rows; write them with tokenscope.analysis.write_table.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypedDict, Union

import duckdb
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tokenscope.analysis.tokens import GROUP_KEYS, token_relation
from tokenscope.duckdb_tables import connect, sql_identifier, sql_literal, sql_number
from tokenscope.errors import ConfigError, TokenscopeError

DEFAULT_STATISTICS: tuple[str, ...] = ("mean", "median", "p90", "p99")
# Bins of the per-unit histograms behind bootstrap CIs of quantiles, per grid segment: the first
# grid puts them over the series' [min, max] (0.002 nats for entropies up to 8 nats), the second
# over the ranges the resampled quantiles use. One series' histogram takes units x bins x 4 bytes
# per segment (32 MB for 2000 prompts) and its bootstrap units x bins multiply-adds per resample
# and segment (about 0.1 s for 2000 resamples of 2000 prompts on 2 cores).
DEFAULT_QUANTILE_BINS = 4096
# Resamples are drawn in blocks of at most _BLOCK_CELLS resamples x units (32 MB of int64); draw
# tables of at most _CACHED_DRAW_CELLS cells are kept for the next estimate of the same size.
_BLOCK_CELLS = 1 << 22
_CACHED_DRAW_CELLS = 1 << 23
# Pooled histograms are computed for at most _POOLED_CELLS resamples x bins at once (16 MB float32).
_POOLED_CELLS = 1 << 22
# One series' histogram has at most _HISTOGRAM_CELLS units x bins (256 MB float32); with more
# units it gets fewer bins (coarser: its ci_resolution says so).
_HISTOGRAM_CELLS = 1 << 26
Correction = Literal["holm", "bh", "none"]
UNIT: tuple[str, ...] = ("prompt_id",)


class BootstrapOptions(TypedDict):
    """The resampling settings every bootstrap function takes as keywords."""

    n_boot: int
    ci: float
    seed: int


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


# --- Per-unit summaries and the bootstrap on them --------------------------------------------------


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


def _resample_counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_units] how many times each unit is drawn when drawing n_units with replacement."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = (draws + (np.arange(n_boot) * n_units)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units)


def _draw_blocks(n_units: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The draw counts of n_boot resamples of n_units units, float32, in blocks of resamples."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // max(n_units, 1))
    for begin in range(0, n_boot, block):
        yield _resample_counts(n_units, min(block, n_boot - begin), rng).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _cached_draws(n_units: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    blocks = tuple(_draw_blocks(n_units, n_boot, seed))
    for block in blocks:
        block.flags.writeable = False
    return blocks


def _draws(n_units: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """_draw_blocks, reused across the many estimates of the same size (same seed: same draws)."""
    if n_units * n_boot <= _CACHED_DRAW_CELLS:
        return iter(_cached_draws(n_units, n_boot, seed))
    return _draw_blocks(n_units, n_boot, seed)


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
    quantile_names = [name for name, q in levels.items() if q is not None]
    quantile_levels = np.array([levels[name] for name in quantile_names], dtype=np.float64)
    if quantile_names and (summary.histogram is None or summary.edges is None):
        raise ValueError(f"quantiles {quantile_names} need a histogram")
    means: list[np.ndarray] = []
    quantiles: list[np.ndarray] = []
    used: list[np.ndarray] = []
    for block in _draws(summary.counts.size, n_boot, seed):
        if len(quantile_names) < len(levels):
            weights = block.astype(np.float64)
            totals, sums = weights @ summary.counts, weights @ summary.sums
            means.append(np.where(totals > 0, sums / np.where(totals > 0, totals, 1.0), np.nan))
        if quantile_names:
            assert summary.histogram is not None and summary.edges is not None
            rows = max(1, _POOLED_CELLS // summary.histogram.shape[1])
            for begin in range(0, block.shape[0], rows):
                pooled = block[begin : begin + rows] @ summary.histogram
                values, widths, first, last = _grid_quantiles(pooled, quantile_levels, summary.edges)
                quantiles.append(values)
                used.append(widths.max(axis=1))
                if support is not None:
                    for i, name in enumerate(quantile_names):
                        low, high = int(first[i].min(initial=summary.edges.size)), int(last[i].max(initial=-1))
                        if low <= high:
                            known = support.get(name, (np.inf, -np.inf))
                            support[name] = (
                                min(known[0], float(summary.edges[low])),
                                max(known[1], float(summary.edges[high + 1])),
                            )
    result: dict[str, np.ndarray] = {}
    resolution = {name: 0.0 for name, q in levels.items() if q is None}
    if means:
        result.update({name: np.concatenate(means) for name, q in levels.items() if q is None})
    if quantile_names:
        stacked, widest = np.concatenate(quantiles, axis=1), np.max(used, axis=0)
        result.update({name: stacked[i] for i, name in enumerate(quantile_names)})
        resolution.update({name: float(widest[i]) for i, name in enumerate(quantile_names)})
    return {name: result[name] for name in statistics}, resolution


def bootstrap_units(
    summary: UnitSummary, statistics: Sequence[str] = ("mean",), *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> dict[str, Estimate]:
    """Point estimate and percentile CI of each statistic, resampling the summary's units."""
    if not 0 < ci < 1:
        raise ConfigError(f"ci must be in (0, 1), got {ci}")
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
        resampled_statistics(summary, computable, n_boot=n_boot, seed=seed) if computable else ({}, {})
    )
    tail = (1 - ci) / 2
    estimates = {}
    for name, q in levels.items():
        point = float(summary.sums.sum() / summary.counts.sum()) if q is None else float(summary.quantiles[q])
        values = resampled.get(name, np.array([]))
        finite = values[np.isfinite(values)]
        low, high = np.quantile(finite, [tail, 1 - tail]) if finite.size else (np.nan, np.nan)
        estimates[name] = Estimate(point, float(low), float(high), n_units, n_tokens, resolution.get(name, np.nan))
    return estimates


# --- Token tables in DuckDB ------------------------------------------------------------------------

# A per-token table: parquet file(s) or folder(s), a pandas DataFrame, or a Tokens already open.
TokenData = Union[str, Path, Sequence[str | Path], pd.DataFrame, "Tokens"]
_names = itertools.count()


def _columns(names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + sql_identifier(n) for n in names)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _is_group(columns: Sequence[str], key: Sequence[object]) -> str:
    """A WHERE condition selecting one group (equality where possible, so parquet scans prune files)."""
    parts = [
        f"{sql_identifier(c)} IS NULL" if _missing(v) else f"{sql_identifier(c)} = {sql_literal(v)}"
        for c, v in zip(columns, key, strict=True)
    ]
    return " AND ".join(parts) if parts else "TRUE"


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
    """The one row of `sql`, fetched to the end (DuckDB refuses other work on an unfinished result)."""
    (row,) = con.execute(sql).fetchall()
    return tuple(row)


def _key(row: Sequence[object]) -> tuple:
    return tuple(None if _missing(v) else (v.item() if isinstance(v, np.generic) else v) for v in row)


# A piece of a histogram grid: (low, high, bins), the bins uniform over [low, high).
Segment = tuple[float, float, int]


def _segment_edges(segments: Sequence[Segment]) -> np.ndarray:
    """The bin edges of consecutive segments (the last one's high closes the grid)."""
    parts = [low + (high - low) * np.arange(bins) / bins for low, high, bins in segments]
    return np.concatenate([*parts, [segments[-1][1]]])


def _bin_sql(segments: Sequence[Segment]) -> str:
    """SQL for the bin (0-based over all segments) of the DOUBLE `v`; values beyond the grid clamp to its ends."""
    cases, offset = [], 0
    for low, high, bins in segments:
        scale = bins / (high - low) if high > low else 0.0
        index = f"floor((v - {sql_literal(float(low))}) * {sql_literal(scale)})"
        code = f"{offset} + CAST(least(greatest({index}, 0), {bins - 1}) AS BIGINT)"
        cases.append((high, code))
        offset += bins
    if len(cases) == 1:
        return cases[0][1]
    branches = " ".join(f"WHEN v < {sql_literal(float(high))} THEN {code}" for high, code in cases[:-1])
    return f"(CASE {branches} ELSE {cases[-1][1]} END)"


@dataclass
class _Series:
    """Per-unit aggregates of one metric of one group: unit numbers, token counts, sums, finite range."""

    units: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    low: float
    high: float
    quantiles: dict[float, float] = field(default_factory=dict)


class Tokens:
    """A per-token table as a DuckDB view, its units numbered in sorted order, and a cache.

    Every statistic of the table goes through per-unit aggregates that DuckDB computes reading
    only the columns involved; the cache keeps those aggregates (small: groups x units) and the
    estimates already computed, so asking again (another table of the same run) costs nothing.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, view: str, unit_columns: Sequence[str], units: str | None = None
    ) -> None:
        self.con, self.view, self.unit_columns = con, view, tuple(unit_columns)
        self.columns = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        self._require(self.unit_columns)
        self._units = units
        self._series: dict[tuple, dict[tuple, _Series]] = {}
        self._estimates: dict[tuple, Estimate] = {}

    @classmethod
    def of(
        cls, data: TokenData, unit_columns: Sequence[str] = UNIT, con: duckdb.DuckDBPyConnection | None = None
    ) -> Tokens:
        """Open `data` (parquet files or folders are scanned lazily; a DataFrame is registered)."""
        if isinstance(data, Tokens):
            if con is not None and con is not data.con:
                raise ValueError("a Tokens table is read on its own DuckDB connection")
            return data if tuple(unit_columns) == data.unit_columns else Tokens(data.con, data.view, unit_columns)
        con = connect() if con is None else con
        name = f"tokenscope_{next(_names)}"
        if isinstance(data, pd.DataFrame):
            con.register(name, data)
        else:
            token_relation(data, None, con).create_view(name)
        return cls(con, name, unit_columns)

    def derive(self, select: str) -> Tokens:
        """A view defined by `select` over this one (named by self.view), sharing its unit numbers."""
        name = f"tokenscope_{next(_names)}"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")
        return Tokens(self.con, name, self.unit_columns, units=self.units)

    def _require(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(f"tokens table lacks column(s) {missing}; it has {self.columns}")

    @property
    def units(self) -> str:
        """A temporary table of the units (unit columns, `_unit`: 0-based number in sorted order)."""
        if self._units is None:
            name = f"tokenscope_{next(_names)}"
            cols = _columns(self.unit_columns)
            order = ", ".join(f"{sql_identifier(c)} NULLS LAST" for c in self.unit_columns)
            self.con.execute(
                f"CREATE TEMP TABLE {name} AS SELECT {cols}, "
                f"CAST(row_number() OVER (ORDER BY {order}) - 1 AS INTEGER) AS _unit "
                f"FROM (SELECT DISTINCT {cols} FROM {self.view})"
            )
            self._units = name
        return self._units

    def unit_keys(self, units: np.ndarray) -> pd.DataFrame:
        """The unit columns of the given unit numbers, in that order."""
        table = self.con.execute(f"SELECT * FROM {self.units} ORDER BY _unit").df()
        return table.iloc[np.asarray(units, dtype=np.int64)][list(self.unit_columns)].reset_index(drop=True)

    def _joined(self, columns: str) -> str:
        """SELECT columns (SQL, over alias t) and `_unit` of every row of the view."""
        using = _columns(self.unit_columns)
        return f"SELECT {columns}, u._unit AS _unit FROM {self.view} t JOIN {self.units} u USING ({using})"

    def series(self, value: str, groups: Sequence[str]) -> dict[tuple, _Series]:
        """Per-unit aggregates of `value` (a column) for each group of `groups`, sorted by group key.

        Units with only NaN values are left out; a group whose values are all NaN has no units.
        """
        key = (value, tuple(groups))
        if key not in self._series:
            self._require([*groups, value])
            lead = f"{_columns(groups, 't.')}, " if groups else ""
            rows = self._joined(f"{lead}{sql_number(value)} AS v")
            group_list = f"{_columns(groups)}, " if groups else ""
            order = "".join(f"{sql_identifier(g)} NULLS LAST, " for g in groups)
            table = self.con.execute(
                f"""SELECT {group_list}_unit, count(*) FILTER (WHERE NOT isnan(v)) AS n,
                       fsum(v) FILTER (WHERE NOT isnan(v)) AS s,
                       min(v) FILTER (WHERE isfinite(v)) AS lo, max(v) FILTER (WHERE isfinite(v)) AS hi
                    FROM ({rows}) GROUP BY ALL ORDER BY {order}_unit"""
            ).df()
            result: dict[tuple, _Series] = {}
            parts = table.groupby(list(groups), sort=False, dropna=False) if groups else [((), table)]
            for group_key, part in parts:
                present = part["n"].to_numpy() > 0
                lo, hi = part["lo"].to_numpy(np.float64), part["hi"].to_numpy(np.float64)
                result[_key(group_key)] = _Series(
                    units=part["_unit"].to_numpy(np.int64)[present],
                    counts=part["n"].to_numpy(np.float64)[present],
                    sums=np.nan_to_num(part["s"].to_numpy(np.float64), nan=0.0)[present],
                    low=float(np.nanmin(lo)) if np.isfinite(lo).any() else np.nan,
                    high=float(np.nanmax(hi)) if np.isfinite(hi).any() else np.nan,
                )
            self._series[key] = result
        return self._series[key]

    def exact_quantiles(self, value: str, groups: Sequence[str], key: tuple, levels: Sequence[float]) -> dict:
        """Exact quantiles (numpy's linear interpolation) of the group's non-NaN values, cached."""
        series = self.series(value, groups)[key]
        missing = [q for q in dict.fromkeys(levels) if q not in series.quantiles]
        if missing and series.counts.size:
            listed = ", ".join(repr(float(q)) for q in missing)
            (found,) = _one(
                self.con,
                f"SELECT quantile_cont(v, [{listed}]) FROM (SELECT {sql_number(value)} AS v FROM {self.view} "
                f"WHERE {_is_group(groups, key)}) WHERE NOT isnan(v)",
            )
            values = found if found is not None else [None] * len(missing)
            series.quantiles.update(zip(missing, (np.nan if v is None else float(v) for v in values), strict=True))
        return {q: series.quantiles.get(q, np.nan) for q in levels}

    def histogram(
        self, value: str, groups: Sequence[str], key: tuple, segments: Sequence[Segment]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(per-unit histogram [units, bins] float32, bin edges [bins + 1]) of the group's values.

        The grid is uniform within each (low, high, bins) segment; the segments tile the group's
        finite [min, max] in order, and +-inf count in the end bins.
        """
        series = self.series(value, groups)[key]
        edges = _segment_edges(segments)
        n_bins = edges.size - 1
        rows = self._joined(f"{sql_number(value)} AS v")
        cells = self.con.execute(
            f"SELECT CAST(_unit AS BIGINT) * {n_bins} + {_bin_sql(segments)} AS cell, count(*) AS n FROM ({rows} "
            f"WHERE {_is_group(groups, key)}) WHERE NOT isnan(v) GROUP BY cell"
        ).fetchnumpy()
        cell = np.asarray(cells["cell"], dtype=np.int64)
        unit = np.searchsorted(series.units, cell // n_bins)
        histogram = np.zeros((series.units.size, n_bins), dtype=np.float32)
        histogram[unit, cell % n_bins] = np.asarray(cells["n"], dtype=np.float32)
        return histogram, edges

    def summary(
        self, value: str, groups: Sequence[str], key: tuple, levels: Sequence[float], segments: Sequence[Segment]
    ) -> UnitSummary:
        """The UnitSummary of one group on a grid of `segments` (no histogram without quantile levels)."""
        series = self.series(value, groups)[key]
        quantiles = self.exact_quantiles(value, groups, key, levels) if levels else {}
        if not levels or not series.counts.size or not np.isfinite(series.low):
            return UnitSummary(series.counts, series.sums, quantiles=quantiles)
        histogram, edges = self.histogram(value, groups, key, segments)
        return UnitSummary(series.counts, series.sums, histogram, edges, quantiles)

    def quantile_summary(
        self, value: str, groups: Sequence[str], key: tuple, names: Sequence[str], bins: int, n_boot: int, seed: int
    ) -> UnitSummary:
        """The UnitSummary whose grid is fine where the resampled quantiles `names` ("p90", ...) fall.

        A first pass on a uniform grid of `bins` bins over the group's finite [min, max] finds
        the coarse bins that hold the order statistics each level's resampled quantiles use; the
        second grid puts `bins` bins over each such range (merged where they overlap) and one bin
        over each gap between them, so the resampled quantiles (the same draws) use fine bins
        only; bootstrap_units reports the widest bin actually used.
        """
        series = self.series(value, groups)[key]
        n_units = max(series.units.size, 1)
        levels = [q for q in (statistic_quantile(name) for name in names) if q is not None]
        if not levels or not series.counts.size or not np.isfinite(series.low) or series.high <= series.low:
            return self.summary(value, groups, key, levels, [(series.low, series.high, 1)])
        first_bins = max(1, min(int(bins), _HISTOGRAM_CELLS // n_units))
        coarse = self.summary(value, groups, key, levels, [(series.low, series.high, first_bins)])
        support: dict[str, tuple[float, float]] = {}
        quantile_names = [n for n in names if statistic_quantile(n) is not None]
        resampled_statistics(coarse, quantile_names, n_boot=n_boot, seed=seed, support=support)
        ranges = sorted((max(series.low, low), min(series.high, high)) for low, high in support.values())
        merged: list[list[float]] = []
        for low, high in ranges:
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        fine_bins = max(1, min(int(bins), _HISTOGRAM_CELLS // (n_units * max(len(merged), 1)) - 2))
        segments: list[Segment] = []
        cursor = series.low
        for low, high in merged:
            if low > cursor:
                segments.append((cursor, low, 1))
            segments.append((low, high, fine_bins if high > low else 1))
            cursor = high
        if cursor < series.high:
            segments.append((cursor, series.high, 1))
        return self.summary(value, groups, key, levels, segments)

    def estimates(
        self,
        value: str,
        groups: Sequence[str],
        statistics: Sequence[str],
        *,
        n_boot: int,
        ci: float,
        seed: int,
        bins: int = DEFAULT_QUANTILE_BINS,
    ) -> dict[tuple, dict[str, Estimate]]:
        """Bootstrap estimates of each statistic of `value` per group (cached: same inputs, same numbers)."""
        result: dict[tuple, dict[str, Estimate]] = {}
        for key in self.series(value, groups):
            cache = {name: (value, tuple(groups), key, name, n_boot, ci, seed, bins) for name in statistics}
            todo = [name for name in statistics if cache[name] not in self._estimates]
            if todo:
                summary = self.quantile_summary(value, groups, key, todo, bins, n_boot, seed)
                for name, estimate in bootstrap_units(summary, todo, n_boot=n_boot, ci=ci, seed=seed).items():
                    self._estimates[cache[name]] = estimate
            result[key] = {name: self._estimates[cache[name]] for name in statistics}
        return result

    def ratio_summary(self, select: str) -> UnitSummary:
        """UnitSummary of `select`, a query giving one row per unit: `_unit`, `n` (count), `s` (sum)."""
        table = self.con.execute(f"SELECT _unit, n, s FROM ({select}) ORDER BY _unit").fetchnumpy()
        return UnitSummary(
            np.asarray(table["n"], dtype=np.float64), np.nan_to_num(np.asarray(table["s"], dtype=np.float64))
        )


# --- Bootstrap summaries -------------------------------------------------------------------------


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    statistics: Sequence[str] = ("mean",),
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    bins: int = DEFAULT_QUANTILE_BINS,
) -> dict[str, Estimate]:
    """Point estimate and percentile CI of each statistic, resampling clusters (prompts).

    `clusters[i]` labels the unit of token i. NaN values are left out. With one token per
    cluster this is the ordinary (token-level) bootstrap. (In-memory arrays: the same per-unit
    summaries and bootstrap as bootstrap_summary.)
    """
    frame = pd.DataFrame({"_cluster": np.asarray(clusters), "value": np.asarray(values, dtype=np.float64)})
    tokens = Tokens.of(frame, ["_cluster"])
    estimates = tokens.estimates("value", [], statistics, n_boot=n_boot, ci=ci, seed=seed, bins=bins)
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
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    bins: int = DEFAULT_QUANTILE_BINS,
) -> pd.DataFrame:
    """Bootstrap CIs over units of each statistic of each metric, per group; one row per number.

    Groups default to the model/source/prompt_set columns present. Columns: group columns,
    `metric`, `statistic`, `estimate`, `ci_low`, `ci_high`, `n_units`, `n_tokens` (non-NaN
    tokens), `ci_resolution` (quantiles: the histogram bin width; means: 0).
    """
    table = Tokens.of(tokens, unit_columns)
    groups = [c for c in GROUP_KEYS if c in table.columns] if group_columns is None else list(group_columns)
    options = {"n_boot": n_boot, "ci": ci, "seed": seed, "bins": bins}
    per_metric = {metric: table.estimates(metric, groups, statistics, **options) for metric in metrics}  # type: ignore[arg-type]
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


# --- Paired tests between models ------------------------------------------------------------------


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
    block = max(1, _BLOCK_CELLS // n)
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
        summary = UnitSummary(np.ones(n), d)
        mean_ci = bootstrap_units(summary, ("mean",), n_boot=n_boot, ci=ci, seed=seed)["mean"]
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


def _share_above(tokens: Tokens, metric: str, model: str, threshold: float) -> UnitSummary:
    """Per unit: the model's non-NaN tokens (counts) and those above `threshold` (sums)."""
    rows = tokens._joined(f"{sql_number(metric)} AS v")
    return tokens.ratio_summary(
        f"SELECT _unit, count(*) AS n, count(*) FILTER (WHERE v > {sql_literal(float(threshold))}) AS s "
        f"FROM ({rows} WHERE {_is_group(['model'], [model])}) WHERE NOT isnan(v) GROUP BY _unit"
    )


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
    frame = pd.DataFrame(
        {"model": "m", "prompt_id": np.asarray(clusters), "value": np.asarray(values, dtype=np.float64)}
    )
    summary = _share_above(Tokens.of(frame), "value", "m", threshold)
    return bootstrap_units(summary, ("mean",), n_boot=n_boot, ci=ci, seed=seed)["mean"]


ALIGN_COLUMNS: tuple[str, ...] = ("prompt_id", "sample", "position")


def _aligned(base: Tokens, other: Tokens, value: str, carry: Sequence[str], what: str) -> Tokens:
    """A temporary table of the rows of base and other scored on the same token at the same place.

    Columns: the alignment keys, `carry` columns and `token_id` from base, `base` and `other` (the
    value, DOUBLE) and `diff` (other - base, in the value's own type). Both must be on one connection.
    """
    keys = [c for c in ALIGN_COLUMNS if c in base.columns and c in other.columns]
    carry = [c for c in dict.fromkeys(carry) if c not in keys and c != "token_id" and c != value]
    base._require([*keys, "token_id", *carry, value])
    other._require([*keys, "token_id", value])
    name = f"tokenscope_{next(_names)}"
    join_on = " AND ".join(f"b.{sql_identifier(k)} = o.{sql_identifier(k)}" for k in keys)
    base.con.execute(
        f"""CREATE TEMP TABLE {name} AS
        SELECT {_columns(keys, "b.")}, {_columns([*carry, "token_id"], "b.")},
               {sql_number(value, "b.")} AS base, {sql_number(value, "o.")} AS other,
               {sql_number(value, "o.")} - {sql_number(value, "b.")} AS diff,
               b.token_id = o.token_id AS same
        FROM {base.view} b JOIN {other.view} o ON {join_on}"""
    )
    (n_base,), (n_other,) = (_one(base.con, f"SELECT count(*) FROM {t.view}") for t in (base, other))
    n_merged, n_same = _one(base.con, f"SELECT count(*), count(*) FILTER (WHERE same) FROM {name}")
    if n_merged != n_base or n_merged != n_other or n_same != n_merged:
        raise ValueError(
            f"{what} needs both models scored on the same tokens (e.g. teacher-forced reference answers "
            f"or cross-scored generations): {n_base} and {n_other} rows, {n_same} matching tokens"
        )
    return Tokens(base.con, name, base.unit_columns, units=base.units)


def _overlap(aligned: Tokens, quantile: float) -> UnitSummary:
    """Per unit (of aligned positions with both values): high-base positions and those high for both."""
    (thresholds,) = _one(
        aligned.con,
        f"SELECT [quantile_cont(base, {quantile!r}), quantile_cont(other, {quantile!r})] "
        f"FROM {aligned.view} WHERE NOT isnan(base) AND NOT isnan(other)",
    )
    if thresholds[0] is None:
        return UnitSummary(np.zeros(0), np.zeros(0))
    high_base, high_other = (sql_literal(float(t)) for t in thresholds)
    rows = aligned._joined("t.base, t.other")
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
    frame = pd.DataFrame({"prompt_id": np.asarray(clusters), "base": base, "other": other})
    summary = _overlap(Tokens.of(frame), quantile)
    return bootstrap_units(summary, ("mean",), n_boot=n_boot, ci=ci, seed=seed)["mean"]


# --- Trends over a series of checkpoints ---------------------------------------------------------


def checkpoint_trends(
    tokens: TokenData,
    checkpoints: Sequence[str],
    *,
    pairs: TokenData | None = None,
    metric: str = "entropy",
    unit_columns: Sequence[str] = UNIT,
    quantile: float = 0.8,
    overlap: bool = True,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    bins: int = DEFAULT_QUANTILE_BINS,
) -> pd.DataFrame:
    """Metrics of each checkpoint against its index in `checkpoints` (the base first, index 0).

    `tokens`: a per-token table of one source (one prompt set) holding every checkpoint's rows.
    Measures, each with a bootstrap CI over units:
      mean_<metric>, p90_<metric>, p99_<metric>;
      share_above_base_p<q>: share of tokens above the base's `quantile` of the metric;
      high_<metric>_overlap: high_entropy_overlap with the base (only with overlap=True, which
        needs every checkpoint scored on the same tokens as the base);
      mean_kl_base_model = KL(base || checkpoint) and mean_kl_model_base = KL(checkpoint || base),
        from `pairs` (pair tables of the base with each checkpoint, either order), when given.
    Columns: `checkpoint`, `model`, `measure`, `estimate`, `ci_low`, `ci_high`, `n_units`,
    `n_tokens`, `ci_resolution`. `pairs` and a `tokens` Tokens must share one connection.
    """
    table = Tokens.of(tokens, unit_columns)
    boot: BootstrapOptions = {"n_boot": n_boot, "ci": ci, "seed": seed}
    statistics = ("mean", "p90", "p99")
    series = table.estimates(metric, ["model"], statistics, bins=bins, **boot)
    base_name = checkpoints[0]
    if (base_name,) not in series:
        raise TokenscopeError(f"no tokens of the base model {base_name!r}")
    (threshold,) = table.exact_quantiles(metric, ["model"], (base_name,), [quantile]).values()
    share_name = f"share_above_base_p{quantile * 100:g}"
    pair_table = None if pairs is None else Tokens.of(pairs, unit_columns, con=table.con)
    rows = []

    def add(index: int, model: str, measure: str, estimate: Estimate) -> None:
        rows.append({"checkpoint": index, "model": model, "measure": measure, **asdict(estimate)})

    base_rows = (
        table.derive(f"SELECT * FROM {table.view} WHERE {_is_group(['model'], [base_name])}") if overlap else None
    )
    for index, model in enumerate(checkpoints):
        if (model,) not in series:
            raise TokenscopeError(f"no tokens of checkpoint {model!r}")
        for name, estimate in series[(model,)].items():
            add(index, model, f"{name}_{metric}", estimate)
        share = bootstrap_units(_share_above(table, metric, model, threshold), ("mean",), **boot)["mean"]
        add(index, model, share_name, share)
        if base_rows is not None:
            add(
                index,
                model,
                f"high_{metric}_overlap",
                _overlap_with_base(table, base_rows, base_name, model, metric, quantile, boot),
            )
        if pair_table is not None and index > 0:
            for measure, estimate in _kl_measures(pair_table, base_name, model, boot).items():
                add(index, model, measure, estimate)
    return pd.DataFrame(rows, columns=["checkpoint", "model", "measure", *ESTIMATE_COLUMNS])


def _overlap_with_base(
    table: Tokens, base_rows: Tokens, base: str, model: str, metric: str, quantile: float, boot: BootstrapOptions
) -> Estimate:
    """high_entropy_overlap of `model` with the base's rows (the base itself: no join needed)."""
    if model == base:
        aligned = base_rows.derive(
            f"SELECT *, {sql_number(metric)} AS base, {sql_number(metric)} AS other FROM {base_rows.view}"
        )
        return bootstrap_units(_overlap(aligned, quantile), ("mean",), **boot)["mean"]
    own = table.derive(f"SELECT * FROM {table.view} WHERE {_is_group(['model'], [model])}")
    aligned = _aligned(base_rows, own, metric, table.unit_columns, f"the high-{metric} overlap")
    try:
        return bootstrap_units(_overlap(aligned, quantile), ("mean",), **boot)["mean"]
    finally:
        table.con.execute(f"DROP TABLE {aligned.view}")


def _kl_measures(pairs: Tokens, base: str, model: str, boot: BootstrapOptions) -> dict[str, Estimate]:
    """mean KL(base || model) and KL(model || base) from the pair rows of (base, model), either order."""
    groups = ["model_a", "model_b"]
    present = pairs.series("kl_a_b", groups)
    if (base, model) in present:
        pair, columns = (base, model), ("kl_a_b", "kl_b_a")
    elif (model, base) in present:
        pair, columns = (model, base), ("kl_b_a", "kl_a_b")
    else:
        return {}
    return {
        measure: pairs.estimates(column, groups, ("mean",), **boot)[pair]["mean"]
        for measure, column in zip(("mean_kl_base_model", "mean_kl_model_base"), columns, strict=True)
    }


# --- Tokens that changed most ---------------------------------------------------------------------


def token_changes(
    frame: TokenData,
    value: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = UNIT,
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
    lowest first); ties go to the larger count, then to the smaller group key. The CI of each
    listed mean is a cluster bootstrap over the units (prompts) in which the group occurs, on
    per-(group, unit) sums, so a group seen in one prompt only has a zero-width interval: read it
    with `n_units`. Columns: `by`, `count`, `n_units`, `mean_<extra>` per extra_means,
    `mean_<value>`, `ci_low`, `ci_high`, `direction`.
    """
    by = list(by)
    table = Tokens.of(frame, unit_columns)
    table._require([*by, value, *extra_means])
    mean_column = f"mean_{value}"
    extra_columns = [f"mean_{c}" for c in extra_means]
    columns = [*by, "count", "n_units", *extra_columns, mean_column, "ci_low", "ci_high", "direction"]
    if top_n <= 0:
        return pd.DataFrame(columns=columns)
    extras = "".join(
        f", fsum({sql_number(c)}) FILTER (WHERE NOT isnan({sql_number(c)})) / "
        f"count(*) FILTER (WHERE NOT isnan({sql_number(c)})) AS {sql_identifier(f'mean_{c}')}"
        for c in extra_means
    )
    groups = f"tokenscope_{next(_names)}"
    table.con.execute(
        f"""CREATE TEMP TABLE {groups} AS
        SELECT {_columns(by)}, count(*) AS "count"{extras},
               fsum({sql_number(value)}) / count(*) AS {sql_identifier(mean_column)}
        FROM {table.view} WHERE NOT isnan({sql_number(value)}) GROUP BY ALL HAVING count(*) >= {int(min_count)}"""
    )
    keys = ", ".join(f"{sql_identifier(c)} NULLS LAST" for c in by)
    mean = sql_identifier(mean_column)
    listed = pd.concat(
        [
            table.con.execute(
                f"SELECT *, '{direction}' AS direction FROM {groups} WHERE {mean} {sign} 0 "
                f'ORDER BY {mean} {order}, "count" DESC, {keys} LIMIT {int(top_n)}'
            ).df()
            for direction, sign, order in (("up", ">", "DESC"), ("down", "<", "ASC"))
        ],
        ignore_index=True,
    )
    table.con.execute(f"DROP TABLE {groups}")
    if listed.empty:
        return pd.DataFrame(columns=columns)
    listed_name = f"tokenscope_{next(_names)}"
    table.con.register(listed_name, listed[by].assign(_group=np.arange(len(listed))))
    rows = table._joined(f"{_columns(by, 't.')}, {sql_number(value)} AS v")
    per_unit = table.con.execute(
        f"SELECT _group, _unit, count(*) AS n, fsum(v) AS s FROM ({rows}) JOIN {listed_name} USING ({_columns(by)}) "
        f"WHERE NOT isnan(v) GROUP BY ALL ORDER BY _group, _unit"
    ).fetchnumpy()
    table.con.unregister(listed_name)
    group = np.asarray(per_unit["_group"], dtype=np.int64)
    starts = np.searchsorted(group, np.arange(len(listed) + 1))
    counts, sums = np.asarray(per_unit["n"], dtype=np.float64), np.asarray(per_unit["s"], dtype=np.float64)
    lows, highs, n_units = [], [], []
    for i in range(len(listed)):
        part = slice(starts[i], starts[i + 1])
        estimate = bootstrap_units(UnitSummary(counts[part], sums[part]), ("mean",), n_boot=n_boot, ci=ci, seed=seed)
        lows.append(estimate["mean"].ci_low)
        highs.append(estimate["mean"].ci_high)
        n_units.append(estimate["mean"].n_units)
    listed["count"] = listed["count"].astype("int64")
    listed["n_units"], listed["ci_low"], listed["ci_high"] = n_units, lows, highs
    for column in [*extra_columns, mean_column]:
        listed[column] = listed[column].astype("float64")
    return listed[columns]


def changed_tokens(
    base: TokenData,
    other: TokenData,
    metric: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = UNIT,
    min_count: int = 5,
    top_n: int = 20,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """token_changes of `metric` from the base's tokens to another model's, on the same tokens.

    Rows are matched on prompt_id, sample and position and must hold the same token in both (the
    same teacher-forced or cross-scored text). The change is other - base; grouping columns are
    taken from the base. Columns as token_changes, with `mean_base`, `mean_other` and `mean_diff`.
    """
    base_table = Tokens.of(base, unit_columns)
    other_table = Tokens.of(other, unit_columns, con=base_table.con)
    aligned = _aligned(base_table, other_table, metric, [*unit_columns, *by], "changed_tokens")
    try:
        return token_changes(
            aligned,
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
    finally:
        aligned.con.execute(f"DROP TABLE {aligned.view}")
