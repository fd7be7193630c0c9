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


def parquet_sql(paths: str | Path | Sequence[str | Path]) -> str:
    """The SQL table expression that reads one or several parquet files as one table."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not files:
        raise ValueError("no parquet files to read")
    quoted = ", ".join("'" + str(Path(p)).replace("'", "''") + "'" for p in files)
    return f"read_parquet([{quoted}])"


def scan(
    con: duckdb.DuckDBPyConnection, paths: str | Path | Sequence[str | Path], columns: Sequence[str]
) -> duckdb.DuckDBPyRelation:
    """A lazy relation over the parquet files with only `columns` (nothing is read until asked)."""
    selected = ", ".join(f'"{c}"' for c in columns)
    return con.sql(f"SELECT {selected} FROM {parquet_sql(paths)}")
