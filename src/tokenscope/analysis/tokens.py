"""Token analyses of per-token tables (one row per scored token), out of core through DuckDB.

`describe()` statistics of a metric, quantile bins of a metric with tokens sampled from some bins,
and mean metrics grouped by context token or by scored token. Each function takes the table as
parquet path(s) (read through tokenscope.duckdb_tables: only the columns it uses), a DuckDB relation, or
a pandas DataFrame (a notebook convenience, registered in DuckDB), aggregates in DuckDB and
returns only aggregated rows as a pandas DataFrame: no Python object per token row.

Samples per bin are exactly `min(samples_per_bin, bin size)`, group tables carry a count with a
minimum-count filter, and the highest / lowest groups are taken deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import duckdb
import numpy as np
import pandas as pd
from tabulate import tabulate

from tokenscope.duckdb_tables import connect, parquet_sql, scan, sql_identifier, sql_literal, sql_number
from tokenscope.errors import ConfigError
from tokenscope.io import write_atomic

# Columns that identify which measurements a row belongs to; analyses run within each.
GROUP_KEYS: tuple[str, ...] = ("model", "source", "prompt_set")
# Columns that locate a sampled token in its generation; after the metric they also order the
# tied rows of a quantile bin, so which rows are sampled does not depend on the files' row order.
SAMPLE_COLUMNS: tuple[str, ...] = ("prompt_id", "sample", "step", "context_token", "token")
DESCRIBE_STATS: tuple[str, ...] = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
# A per-token table: parquet file(s) or folder(s) of parquet files, a DuckDB relation, a DataFrame.
TokenTable: TypeAlias = str | Path | Sequence[str | Path] | pd.DataFrame | duckdb.DuckDBPyRelation


def _parquet_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The parquet files named; a folder stands for its *.parquet files, sorted by name."""
    named = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for name in named:
        path = Path(name)
        files.extend(sorted(path.glob("*.parquet")) if path.is_dir() else [path])
    if not files:
        raise FileNotFoundError(f"no parquet files in {[str(p) for p in named]}")
    return files


def token_relation(
    tokens: TokenTable, columns: Sequence[str] | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyRelation:
    """A lazy DuckDB relation over `tokens`, with those of `columns` it has (all when None).

    Parquet paths are scanned on `con` (tokenscope.duckdb_tables.scan; a new connection when None), so
    only those columns are read, and only when a query runs. A DataFrame is registered on `con`;
    a relation is used as it is, on its own connection.
    """
    if isinstance(tokens, duckdb.DuckDBPyRelation):
        return tokens
    con = connect() if con is None else con
    if isinstance(tokens, pd.DataFrame):
        return con.from_df(tokens)
    files = _parquet_files(tokens)
    available = con.sql(f"SELECT * FROM {parquet_sql(files)}").columns  # the schema only
    return scan(con, files, available if columns is None else [c for c in available if c in set(columns)])


def _run(rel: duckdb.DuckDBPyRelation, sql: str) -> pd.DataFrame:
    """The result of `sql` over the relation, named `tokens` in it."""
    result = rel.query("tokens", sql)
    if result is None:  # only a statement that is not a query gives no relation
        raise ValueError(f"not a query: {sql}")
    return result.df()


def _require(columns: Sequence[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise KeyError(f"tokens table lacks column(s) {missing}; it has {list(columns)}")


def _order(columns: Sequence[str]) -> str:
    return ", ".join(f"{sql_identifier(c)} NULLS LAST" for c in columns)


def _is_group(keys: Sequence[str], values: Sequence[object]) -> str:
    """A WHERE condition selecting one group (NULL keys included)."""
    parts = [f"{sql_identifier(k)} IS NOT DISTINCT FROM {sql_literal(v)}" for k, v in zip(keys, values, strict=True)]
    return " AND ".join(parts) if parts else "TRUE"


def describe_metric(
    tokens: TokenTable,
    metric: str = "entropy",
    by: Sequence[str] = ("model", "source", "prompt_set"),
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """`describe()` statistics of `metric` per group of `by`: one row per group, keys as columns.

    As pandas' describe: `count` counts the non-NaN values (an integer column), `std` is the sample
    standard deviation, the quartiles interpolate linearly, all float64 (float32 columns are
    widened first). Pass `by=[..., "prompt_id"]` for one row per prompt; groups sorted by `by`.
    """
    by = list(by)
    rel = token_relation(tokens, [*by, metric], con)
    _require(rel.columns, [*by, metric])
    keys = ", ".join(sql_identifier(k) for k in by)
    lead = f"{keys}, " if by else ""
    grouping = f"GROUP BY {keys}" if by else ""
    sql = f"""
        WITH stats AS (
            SELECT {lead}count(v) AS "count", avg(v) AS "mean", stddev_samp(v) AS "std", min(v) AS "min",
                   quantile_cont(v, [0.25, 0.5, 0.75]) AS quartiles, max(v) AS "max"
            FROM (SELECT {lead}{sql_number(metric)} AS v FROM tokens)
            {grouping}
        )
        SELECT {lead}"count", "mean", "std", "min", quartiles[1] AS "25%", quartiles[2] AS "50%",
               quartiles[3] AS "75%", "max"
        FROM stats {f"ORDER BY {_order(by)}" if by else ""}
    """
    stats = _run(rel, sql)
    stats["count"] = stats["count"].astype("int64")
    for column in DESCRIBE_STATS[1:]:
        stats[column] = stats[column].astype("float64")
    return stats


def displayed_bins(n_bins: int) -> list[int]:
    """The bins shown with samples: 0, n/4, n/2, 3n/4 and n-1 (integer division), deduplicated."""
    if n_bins <= 0:
        return []
    return sorted({0, n_bins // 4, n_bins // 2, n_bins * 3 // 4, n_bins - 1})


def _even_positions(size: int, k: int) -> np.ndarray:
    """k positions spread evenly over range(size), first and last included; distinct when k <= size."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, size - 1, k)).astype(np.int64))


def _interval_text(lower: float, upper: float, first: bool) -> str:
    # the lowest bin is closed on the left (pd.qcut's include_lowest); the others are (lower, upper]
    return f"{'[' if first else '('}{lower:.6g}, {upper:.6g}]"


def quantile_ranks(n: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower rank, upper rank, weight) of the quantiles i / n_bins, i = 0..n_bins, of n sorted values.

    Linear interpolation (numpy's default, pandas' quantile): quantile i sits at rank
    (n - 1) i / n_bins, computed in integers, so a rank that is a whole number is exact.
    """
    i = np.arange(n_bins + 1, dtype=np.int64)
    lower, remainder = np.divmod((n - 1) * i, n_bins)
    upper = np.minimum(lower + (remainder > 0), n - 1)
    return lower, upper, remainder / n_bins


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation: a + (b - a) t, from b's side when t >= 0.5; a exactly when t = 0."""
    diff = b - a
    return np.where(t == 0, a, np.where(t >= 0.5, b - diff * (1 - t), a + diff * t))


def _bin_code(edges: np.ndarray) -> str:
    """SQL for the bin of `v` given sorted distinct edges: (e_i, e_i+1], the first one [e_0, e_1]."""
    if len(edges) < 2:
        return "0"
    cases = " ".join(f"WHEN v <= {sql_literal(float(e))} THEN {i}" for i, e in enumerate(edges[1:-1]))
    return f"CASE {cases} ELSE {len(edges) - 2} END" if cases else "0"


def qcut_bins(
    tokens: TokenTable,
    metric: str = "entropy",
    n_bins: int = 10,
    samples_per_bin: int = 5,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantile bins of `metric` (as pd.qcut with duplicates='drop') and tokens sampled from some bins.

    Bins are computed separately for each model/source/prompt_set present. Returns (bins, samples):

    - bins: one row per non-empty bin: group keys, `bin` (0-based), `lower`, `upper` (the quantile
      edges, linear interpolation; the first bin includes its lower edge), `count`,
      `mean_<metric>`, and `displayed` (bins 0, n/4, n/2, 3n/4, n-1 of the n bins: those shown
      with samples).
    - samples: for each displayed bin, min(samples_per_bin, count) rows evenly spaced over the bin
      sorted by the metric (lowest and highest included; tied rows ordered by prompt_id, sample,
      step, context_token, token): group keys, `bin`, `bin_range`, prompt_id, sample, step,
      context_token, token, and the metric (in its own type).

    A constant metric gives one bin; rows with a NaN metric are left out. Order statistics come
    from DuckDB sorts (spilled to disk when large), never from the whole column in memory.
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be at least 1, got {n_bins}")
    if samples_per_bin < 0:
        raise ConfigError(f"samples_per_bin must be >= 0, got {samples_per_bin}")
    rel = token_relation(tokens, [*GROUP_KEYS, *SAMPLE_COLUMNS, metric], con)
    _require(rel.columns, [metric])
    keys = [k for k in GROUP_KEYS if k in rel.columns]
    sample_cols = [c for c in SAMPLE_COLUMNS if c in rel.columns and c != metric]
    mean_col = f"mean_{metric}"
    bin_columns = [*keys, "bin", "lower", "upper", "count", mean_col, "displayed"]
    sample_columns = [*keys, "bin", "bin_range", *sample_cols, metric]
    valid = f"(SELECT *, {sql_number(metric)} AS v FROM tokens) WHERE v IS NOT NULL"

    lead = "".join(f"{sql_identifier(k)}, " for k in keys)
    groups = _run(
        rel,
        f"SELECT {lead}count(*) AS n FROM {valid} "
        + (f"GROUP BY {', '.join(map(sql_identifier, keys))} ORDER BY {_order(keys)}" if keys else ""),
    )
    bin_frames: list[pd.DataFrame] = []
    sample_frames: list[pd.DataFrame] = []
    for group in groups.itertuples(index=False, name=None):  # one per model/source/prompt_set
        key_values, n = list(group[:-1]), int(group[-1])
        if n == 0:
            continue
        rows = f"{valid} AND {_is_group(keys, key_values)}"
        # the order statistics the quantile edges interpolate between: one sort, a few rows back
        lower_rank, upper_rank, weight = quantile_ranks(n, n_bins)
        edge_ranks = ", ".join(str(r) for r in np.union1d(lower_rank, upper_rank))
        order_stats = _run(
            rel,
            f"SELECT r, v FROM (SELECT v, row_number() OVER (ORDER BY v) - 1 AS r FROM {rows}) "
            f"WHERE r IN ({edge_ranks})",
        )
        value_at = dict(zip(order_stats["r"].astype(np.int64), order_stats["v"].astype(np.float64), strict=True))
        a = np.array([value_at[r] for r in lower_rank])
        b = np.array([value_at[r] for r in upper_rank])
        edges = np.unique(_lerp(a, b, weight))
        code = _bin_code(edges)

        stats = _run(
            rel,
            f"SELECT {code} AS code, count(*) AS n, avg(v) AS mean FROM {rows} GROUP BY code ORDER BY code",
        )
        used = stats["code"].to_numpy(dtype=np.int64)  # the non-empty bins, renumbered 0..
        n_actual = len(used)
        count = stats["n"].to_numpy(dtype=np.int64)
        lower = edges[used]
        upper = edges[np.minimum(used + 1, len(edges) - 1)]
        shown = displayed_bins(n_actual)
        bins = pd.DataFrame(
            {
                "bin": np.arange(n_actual, dtype=np.int64),
                "lower": lower,
                "upper": upper,
                "count": count,
                mean_col: stats["mean"].to_numpy(dtype=np.float64),
                "displayed": np.isin(np.arange(n_actual), shown),
            }
        )
        for position, (key, value) in enumerate(zip(keys, key_values, strict=True)):
            bins.insert(position, key, value)
        bin_frames.append(bins)

        # the sampled rows, by their rank in the group sorted by the metric (bins are runs of it)
        starts = np.concatenate([[0], np.cumsum(count)[:-1]])
        sampled = [
            (b, int(starts[b]) + int(p))
            for b in shown
            for p in _even_positions(int(count[b]), min(samples_per_bin, int(count[b])))
        ]
        if not sampled:
            continue
        # a second sort, of the metric alone: each sampled rank's value, and where its tie run starts
        ranks = ", ".join(str(g) for _, g in sampled)
        at_rank = _run(
            rel,
            f"""SELECT r, v, first FROM (
                    SELECT v, row_number() OVER (ORDER BY v) - 1 AS r, rank() OVER (ORDER BY v) - 1 AS first
                    FROM {rows}
                ) WHERE r IN ({ranks})""",
        ).set_index("r")
        wanted = [(float(at_rank.at[g, "v"]), g - int(at_rank.at[g, "first"])) for _, g in sampled]
        # only the rows of those values are ordered by the tie-break and read with their strings
        payload = ", ".join(sql_identifier(c) for c in [*sample_cols, metric])
        tie_break = ", ".join(f"{sql_identifier(c)} NULLS LAST" for c in sample_cols) or "v"
        values = ", ".join(sql_literal(v) for v in sorted({v for v, _ in wanted}))
        chosen = " OR ".join(f"(v = {sql_literal(v)} AND t = {t})" for v, t in sorted(set(wanted)))
        found = _run(
            rel,
            f"""SELECT v, t, {payload} FROM (
                    SELECT v, {payload}, row_number() OVER (PARTITION BY v ORDER BY {tie_break}) - 1 AS t
                    FROM {rows} AND v IN ({values})
                ) WHERE {chosen}""",
        )
        row_of = {(float(v), int(t)): i for i, (v, t) in enumerate(zip(found["v"], found["t"], strict=True))}
        picked = found.iloc[[row_of[key] for key in wanted]].drop(columns=["v", "t"]).reset_index(drop=True)
        bin_of = pd.Series([b for b, _ in sampled], dtype="int64")
        ranges = [_interval_text(lower[b], upper[b], b == 0) for b in range(n_actual)]
        picked.insert(0, "bin", bin_of)
        picked.insert(1, "bin_range", [ranges[b] for b in bin_of])
        for position, (key, value) in enumerate(zip(keys, key_values, strict=True)):
            picked.insert(position, key, value)
        sample_frames.append(picked[sample_columns])

    bins = pd.concat(bin_frames, ignore_index=True) if bin_frames else pd.DataFrame(columns=bin_columns)
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame(columns=sample_columns)
    return bins[bin_columns], samples[sample_columns]


def token_groups(
    tokens: TokenTable,
    by: str = "context_token",
    metrics: tuple[str, ...] = ("entropy", "prob"),
    min_count: int = 5,
    top_n: int = 20,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Mean metrics per token of column `by`, for the groups with the highest and lowest mean.

    A token is its id (`<by>_id`, e.g. token_id) when the table has that column, else its string;
    the string is attached after aggregation. Grouped also by model/source/prompt_set when
    present. Columns: group keys, `<by>_id` (when grouped by id), `by`, `count` (rows, NaN
    metrics included), `mean_<metric>` per metric (NaN left out), `extreme`. Groups with fewer
    than `min_count` tokens are dropped. Ranked by the first metric (entropy by default): within
    each model/source/prompt_set, the `top_n` highest rows (extreme="high", highest first) and
    then the `top_n` lowest (extreme="low", lowest first); ties are broken by larger count, then by
    the `by` string, then by id. When fewer than 2 * top_n groups remain, a group can be in both
    lists and then appears twice, once per `extreme`.
    """
    if not metrics:
        raise ConfigError("metrics must name at least one column")
    id_col = f"{by}_id"
    rel = token_relation(tokens, [*GROUP_KEYS, by, id_col, *metrics], con)
    _require(rel.columns, [by, *metrics])
    keys = [k for k in GROUP_KEYS if k in rel.columns and k not in (by, id_col)]
    by_id = id_col in rel.columns
    mean_cols = [f"mean_{m}" for m in metrics]
    columns = [*keys, *([id_col] if by_id else []), by, "count", *mean_cols, "extreme"]
    if top_n <= 0:
        return pd.DataFrame(columns=columns)

    group_cols = [*keys, id_col if by_id else by]
    grouping = ", ".join(map(sql_identifier, group_cols))
    text = f"min({sql_identifier(by)}) AS {sql_identifier(by)}, " if by_id else ""
    means = ", ".join(f"avg({sql_number(m)}) AS {sql_identifier(c)}" for m, c in zip(metrics, mean_cols, strict=True))
    partition = f"PARTITION BY {', '.join(map(sql_identifier, keys))} " if keys else ""
    rank, ident_order = sql_identifier(mean_cols[0]), f", {sql_identifier(id_col)}" if by_id else ""

    def ranked(direction: str) -> str:
        return (
            f"row_number() OVER ({partition}ORDER BY {rank} {direction} NULLS LAST, count DESC, "
            f"{sql_identifier(by)} NULLS LAST{ident_order})"
        )

    out = ", ".join(sql_identifier(c) for c in columns[:-1])
    sql = f"""
        WITH g AS (
            SELECT {grouping}, {text}count(*) AS count, {means}
            FROM tokens GROUP BY {grouping} HAVING count(*) >= {int(min_count)}
        ), r AS (SELECT *, {ranked("DESC")} AS high, {ranked("ASC")} AS low FROM g)
        SELECT {out}, extreme FROM (
            SELECT *, 'high' AS extreme, 0 AS list, high AS place FROM r WHERE high <= {int(top_n)}
            UNION ALL
            SELECT *, 'low' AS extreme, 1 AS list, low AS place FROM r WHERE low <= {int(top_n)}
        ) ORDER BY {_order(keys) + ", " if keys else ""}list, place
    """
    table = _run(rel, sql)
    table["count"] = table["count"].astype("int64")
    return table[columns].reset_index(drop=True)


def _readable(value: object) -> object:
    """A string cell that shows exactly which characters it holds; other values unchanged.

    Plain text is shown as is. A string that is empty, has leading/trailing whitespace, any
    non-printable character (newline, tab, ...), a backslash, or starts with a quote is shown as
    its Python repr, so ' the' -> "' the'" and '\\n\\n' -> "'\\\\n\\\\n'" stay distinguishable.
    """
    if not isinstance(value, str):
        return value
    plain = (
        value != "" and value == value.strip() and value.isprintable() and "\\" not in value and value[0] not in "'\""
    )
    return value if plain else repr(value)


def _cell(value: object, float_format: str) -> str:
    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format)
    text = str(_readable(value))
    # a pipe would end the markdown cell; '\|' renders as '|'
    return text.replace("|", "\\|")


def to_markdown(df: pd.DataFrame, title: str | None = None, float_format: str = ".4f") -> str:
    """A GitHub-flavoured markdown table of `df`, with an optional '## title' heading.

    Floats use `float_format`; strings are escaped as in `_readable` (whitespace tokens show as
    repr) and pipes are escaped. A non-default index is shown as columns.
    """
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    # cells are formatted here and number parsing is off, so a token such as '1.50' or '007'
    # stays the string it is instead of being reformatted as a number by tabulate
    rows = [[_cell(v, float_format) for v in row] for row in df.itertuples(index=False, name=None)]
    headers = [_cell(str(c), float_format) for c in df.columns]
    table = tabulate(
        rows,
        headers=headers,
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right" if n else "left" for n in numeric] if len(df.columns) else None,
    )
    text = f"## {title}\n\n{table}\n" if title else f"{table}\n"
    return text


def write_table(df: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str | None) -> None:
    """Write `df` as CSV (no index) and as a markdown table, each atomically, creating folders."""
    frame = df if isinstance(df.index, pd.RangeIndex) else df.reset_index()
    write_atomic(csv_path, lambda tmp: frame.to_csv(tmp, index=False))
    markdown = to_markdown(frame, title)
    write_atomic(md_path, lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
