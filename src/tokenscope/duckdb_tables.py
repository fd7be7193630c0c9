"""Out-of-core reads of the workflow's parquet tables, through DuckDB.

Every analysis, statistics, figure and token-view job reads its per-token tables here: DuckDB
scans parquet reading only the columns and row groups a query needs, aggregates in a bounded
amount of memory (spilling to disk beyond `memory_limit_mb`), and hands results over as Arrow or
numpy without a Python object per row. (pyarrow alone holds whole columns in memory for a
group-by; polars' streaming engine would do too, but DuckDB's memory limit with spilling is what
keeps a job within the memory it asks the cluster for.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

# What a job's DuckDB may hold before spilling, unless the job says otherwise.
DEFAULT_MEMORY_LIMIT_MB = 1000
# Share of a job's mem_mb given to DuckDB; the rest is headroom for Python, torch, pandas and Arrow.
DUCKDB_MEMORY_SHARE = 0.6


def duckdb_memory_mb(job_mem_mb: float) -> int:
    """DuckDB's memory limit (MB) for a job that asked for `job_mem_mb`: DUCKDB_MEMORY_SHARE of it."""
    return max(int(DUCKDB_MEMORY_SHARE * float(job_mem_mb)), 100)


def connect(memory_limit_mb: int | None = None, threads: int = 1) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to a temporary folder beyond `memory_limit_mb` (MB)."""
    con = duckdb.connect(":memory:")
    limit = DEFAULT_MEMORY_LIMIT_MB if memory_limit_mb is None else int(memory_limit_mb)
    con.execute(f"SET memory_limit = '{max(limit, 100)}MB'")
    con.execute(f"SET threads = {max(int(threads), 1)}")
    spill = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "tokenscope-duckdb"
    con.execute(f"SET temp_directory = '{spill.as_posix()}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # a job log is not a terminal
    return con


def sql_identifier(name: str) -> str:
    """A column or table name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: object) -> str:
    """A SQL literal of a key, string or bin edge: floats exactly (parsed from their repr), NaN and None as NULL."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"'{value!r}'::DOUBLE"
    return "'" + str(value).replace("'", "''") + "'"


def sql_number(column: str, prefix: str = "") -> str:
    """Column `prefix+column` as DOUBLE with NaN as NULL, so that NaN values drop out of every
    statistic (as in pandas). NaN is told as neither finite nor infinite: DuckDB 2.0 answers
    isnan() (and x = x) from parquet min/max statistics, which leave NaN out, so on a parquet scan
    isnan() is false for NaN rows."""
    value = f"CAST({prefix}{sql_identifier(column)} AS DOUBLE)"
    return f"(CASE WHEN NOT isfinite({value}) AND NOT isinf({value}) THEN NULL ELSE {value} END)"


def sql_list(values: Sequence[object]) -> str:
    """Comma-separated SQL literals, for `IN (...)`."""
    return ", ".join(sql_literal(v) for v in values)


def parquet_sql(paths: str | Path | Sequence[str | Path]) -> str:
    """The SQL table expression that reads one or several parquet files as one table."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not files:
        raise ValueError("no parquet files to read")
    return f"read_parquet([{sql_list([str(Path(p)) for p in files])}])"


def scan(
    con: duckdb.DuckDBPyConnection, paths: str | Path | Sequence[str | Path], columns: Sequence[str]
) -> duckdb.DuckDBPyRelation:
    """A lazy relation over the parquet files with only `columns` (nothing is read until asked)."""
    selected = ", ".join(sql_identifier(c) for c in columns)
    return con.sql(f"SELECT {selected} FROM {parquet_sql(paths)}")
