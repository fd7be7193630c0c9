"""Per-token tables as DuckDB views (`Tokens`), and the per-unit summaries the bootstrap reads from them.

Every statistic of a table first aggregates its tokens to per-unit summaries (token count and sum
per unit, and for quantiles a per-unit histogram) that DuckDB computes reading only the columns
involved; the bootstrap (resampling) works on those only. Units are numbered in the sorted order of
their key, so the numbers do not depend on the order of the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import duckdb
import numpy as np
import pandas as pd

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.resampling import (
    Estimate,
    UnitSummary,
    bootstrap_units,
    resampled_statistics,
    statistic_quantile,
)
from tokenscope.analysis.tokens import token_relation
from tokenscope.duckdb_tables import connect, sql_identifier, sql_literal, sql_number
from tokenscope.errors import TokenscopeError

UNIT: tuple[str, ...] = ("prompt_id",)
# One series' histogram has at most _HISTOGRAM_CELLS units x bins (256 MB float32); with more
# units it gets fewer bins (coarser: its ci_resolution says so).
_HISTOGRAM_CELLS = 1 << 26

# A per-token table: parquet file(s) or folder(s), a pandas DataFrame, or a Tokens already open.
TokenData = Union[str, Path, Sequence[str | Path], pd.DataFrame, "Tokens"]
_names = itertools.count()


def temp_name() -> str:
    """A new name for a view or temporary table of this process."""
    return f"tokenscope_{next(_names)}"


def sql_columns(names: Sequence[str], prefix: str = "") -> str:
    """The columns quoted for SQL, comma-separated, each after `prefix` (a table alias such as "t.")."""
    return ", ".join(prefix + sql_identifier(n) for n in names)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def group_condition(columns: Sequence[str], key: Sequence[object]) -> str:
    """A WHERE condition selecting one group (equality where possible, so parquet scans prune files)."""
    parts = [
        f"{sql_identifier(c)} IS NULL" if _missing(v) else f"{sql_identifier(c)} = {sql_literal(v)}"
        for c, v in zip(columns, key, strict=True)
    ]
    return " AND ".join(parts) if parts else "TRUE"


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
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
        self.require(self.unit_columns)
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
        name = temp_name()
        if isinstance(data, pd.DataFrame):
            con.register(name, data)
        else:
            token_relation(data, None, con).create_view(name)
        return cls(con, name, unit_columns)

    def derive(self, select: str) -> Tokens:
        """A view defined by `select` over this one (named by self.view), sharing its unit numbers."""
        name = temp_name()
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")
        return Tokens(self.con, name, self.unit_columns, units=self.units)

    def require(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(f"tokens table lacks column(s) {missing}; it has {self.columns}")

    @property
    def units(self) -> str:
        """A temporary table of the units (unit columns, `_unit`: 0-based number in sorted order)."""
        if self._units is None:
            name = temp_name()
            cols = sql_columns(self.unit_columns)
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

    def joined(self, columns: str) -> str:
        """SELECT columns (SQL, over alias t) and `_unit` of every row of the view."""
        using = sql_columns(self.unit_columns)
        return f"SELECT {columns}, u._unit AS _unit FROM {self.view} t JOIN {self.units} u USING ({using})"

    def series(self, value: str, groups: Sequence[str]) -> dict[tuple, _Series]:
        """Per-unit aggregates of `value` (a column) for each group of `groups`, sorted by group key.

        Units with only NaN values are left out; a group whose values are all NaN has no units.
        """
        key = (value, tuple(groups))
        if key not in self._series:
            self.require([*groups, value])
            lead = f"{sql_columns(groups, 't.')}, " if groups else ""
            rows = self.joined(f"{lead}{sql_number(value)} AS v")
            group_list = f"{sql_columns(groups)}, " if groups else ""
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
            (found,) = fetch_one(
                self.con,
                f"SELECT quantile_cont(v, [{listed}]) FROM (SELECT {sql_number(value)} AS v FROM {self.view} "
                f"WHERE {group_condition(groups, key)}) WHERE NOT isnan(v)",
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
        rows = self.joined(f"{sql_number(value)} AS v")
        cells = self.con.execute(
            f"SELECT CAST(_unit AS BIGINT) * {n_bins} + {_bin_sql(segments)} AS cell, count(*) AS n FROM ({rows} "
            f"WHERE {group_condition(groups, key)}) WHERE NOT isnan(v) GROUP BY cell"
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
        self, value: str, groups: Sequence[str], key: tuple, names: Sequence[str], boot: BootstrapOptions
    ) -> UnitSummary:
        """The UnitSummary whose grid is fine where the resampled quantiles `names` ("p90", ...) fall.

        A first pass on a uniform grid of `boot.bins` bins over the group's finite [min, max] finds
        the coarse bins that hold the order statistics each level's resampled quantiles (the draws
        of `boot`) use; the second grid puts `boot.bins` bins over each such range (merged where
        they overlap) and one bin over each gap between them, so the resampled quantiles (the same
        draws) use fine bins only; bootstrap_units reports the widest bin actually used.
        """
        series = self.series(value, groups)[key]
        n_units = max(series.units.size, 1)
        levels = [q for q in (statistic_quantile(name) for name in names) if q is not None]
        if not levels or not series.counts.size or not np.isfinite(series.low) or series.high <= series.low:
            return self.summary(value, groups, key, levels, [(series.low, series.high, 1)])
        first_bins = max(1, min(int(boot.bins), _HISTOGRAM_CELLS // n_units))
        coarse = self.summary(value, groups, key, levels, [(series.low, series.high, first_bins)])
        support: dict[str, tuple[float, float]] = {}
        quantile_names = [n for n in names if statistic_quantile(n) is not None]
        resampled_statistics(coarse, quantile_names, n_boot=boot.n_boot, seed=boot.seed, support=support)
        ranges = sorted((max(series.low, low), min(series.high, high)) for low, high in support.values())
        merged: list[list[float]] = []
        for low, high in ranges:
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        fine_bins = max(1, min(int(boot.bins), _HISTOGRAM_CELLS // (n_units * max(len(merged), 1)) - 2))
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
        self, value: str, groups: Sequence[str], statistics: Sequence[str], boot: BootstrapOptions
    ) -> dict[tuple, dict[str, Estimate]]:
        """Bootstrap estimates of each statistic of `value` per group (cached: same inputs, same numbers)."""
        result: dict[tuple, dict[str, Estimate]] = {}
        for key in self.series(value, groups):
            cache = {name: (value, tuple(groups), key, name, boot) for name in statistics}
            todo = [name for name in statistics if cache[name] not in self._estimates]
            if todo:
                summary = self.quantile_summary(value, groups, key, todo, boot)
                for name, estimate in bootstrap_units(summary, todo, boot=boot).items():
                    self._estimates[cache[name]] = estimate
            result[key] = {name: self._estimates[cache[name]] for name in statistics}
        return result

    def ratio_summary(self, select: str) -> UnitSummary:
        """UnitSummary of `select`, a query giving one row per unit: `_unit`, `n` (count), `s` (sum)."""
        table = self.con.execute(f"SELECT _unit, n, s FROM ({select}) ORDER BY _unit").fetchnumpy()
        return UnitSummary(
            np.asarray(table["n"], dtype=np.float64), np.nan_to_num(np.asarray(table["s"], dtype=np.float64))
        )


ALIGN_COLUMNS: tuple[str, ...] = ("prompt_id", "sample", "position")


def aligned(base: Tokens, other: Tokens, value: str, carry: Sequence[str], what: str) -> Tokens:
    """A temporary table of the rows of base and other scored on the same token at the same place.

    Columns: the alignment keys, `carry` columns and `token_id` from base, `base` and `other` (the
    value, DOUBLE) and `diff` (other - base, in the value's own type). Both must be on one connection.
    Tables of different tokens are a TokenscopeError naming `what` (the statistic that needs them).
    """
    keys = [c for c in ALIGN_COLUMNS if c in base.columns and c in other.columns]
    carry = [c for c in dict.fromkeys(carry) if c not in keys and c != "token_id" and c != value]
    base.require([*keys, "token_id", *carry, value])
    other.require([*keys, "token_id", value])
    name = temp_name()
    join_on = " AND ".join(f"b.{sql_identifier(k)} = o.{sql_identifier(k)}" for k in keys)
    base.con.execute(
        f"""CREATE TEMP TABLE {name} AS
        SELECT {sql_columns(keys, "b.")}, {sql_columns([*carry, "token_id"], "b.")},
               {sql_number(value, "b.")} AS base, {sql_number(value, "o.")} AS other,
               {sql_number(value, "o.")} - {sql_number(value, "b.")} AS diff,
               b.token_id = o.token_id AS same
        FROM {base.view} b JOIN {other.view} o ON {join_on}"""
    )
    (n_base,), (n_other,) = (fetch_one(base.con, f"SELECT count(*) FROM {t.view}") for t in (base, other))
    n_merged, n_same = fetch_one(base.con, f"SELECT count(*), count(*) FILTER (WHERE same) FROM {name}")
    if n_merged != n_base or n_merged != n_other or n_same != n_merged:
        raise TokenscopeError(
            f"{what} needs both models scored on the same tokens (teacher-forced references or cross-scored "
            f"generations), but their tables have {n_base} and {n_other} rows with {n_same} matching tokens"
        )
    return Tokens(base.con, name, base.unit_columns, units=base.units)
