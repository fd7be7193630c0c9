"""NaN values read from parquet are left out of every statistic, as in pandas.

DuckDB 2.0 answers isnan() from parquet min/max statistics (which leave NaN out), so a filter
`NOT isnan(x)` on a parquet scan keeps NaN rows; tokenscope.duckdb_tables.sql_number turns NaN into NULL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt

from tokenscope.analysis.stats import BootstrapOptions, bootstrap_summary
from tokenscope.analysis.tokens import describe_metric
from tokenscope.duckdb_tables import connect, parquet_sql, sql_number


def _tokens() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "model": "m",
            "source": "m",
            "prompt_set": "p",
            "prompt_id": [f"q{i % 20}" for i in range(n)],
            "sample": np.zeros(n, dtype=np.int32),
            "entropy": rng.gamma(2.0, 0.5, n).astype(np.float32),
        }
    )
    frame.loc[::7, "entropy"] = np.nan
    return frame


def test_sql_number_drops_nan_from_a_parquet_scan(tmp_path):
    path = tmp_path / "t.parquet"
    _tokens().to_parquet(path)
    con = connect()
    ((count,),) = con.sql(f"SELECT count({sql_number('entropy')}) FROM {parquet_sql(path)}").fetchall()
    assert count == _tokens()["entropy"].notna().sum()


def test_statistics_from_parquet_equal_those_without_the_nan_rows(tmp_path):
    frame = _tokens()
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    clean = frame.dropna(subset=["entropy"]).reset_index(drop=True)
    boot = BootstrapOptions(n_boot=200, seed=3)
    pdt.assert_frame_equal(
        bootstrap_summary(path, ["entropy"], boot=boot), bootstrap_summary(clean, ["entropy"], boot=boot)
    )
    pdt.assert_frame_equal(describe_metric(path), describe_metric(clean))
    assert describe_metric(path)["count"].iloc[0] == len(clean)
