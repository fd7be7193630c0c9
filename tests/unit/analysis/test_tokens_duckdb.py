"""The DuckDB token analyses against plain pandas/numpy references on random parquet tables.

Tables have several models, prompts and samples, NaN (and null) metrics, and many tied values
(so that quantile edges fall on ties); each result is compared with the same statistic computed
in pandas from the whole table in memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenscope.analysis.tokens import (
    SAMPLE_COLUMNS,
    _even_positions,
    describe_metric,
    displayed_bins,
    qcut_bins,
    token_groups,
    token_relation,
)
from tokenscope.duckdb_tables import connect, duckdb_memory_mb

KEYS = ["model", "source", "prompt_set"]
PER_PROMPT = [*KEYS, "prompt_id"]
VOCAB = np.array([" the", "\n", "a|b", "x", "'q'", "1.50", "\t", "é", "y", "z"], dtype=object)


def random_tokens(seed: int, n: int = 3000, models: tuple[str, ...] = ("m1", "m2"), ties: bool = True) -> pd.DataFrame:
    """A per-token frame: models x prompts x samples, metrics with ties at round values and NaNs."""
    rng = np.random.default_rng(seed)
    frames = []
    for model in models:
        ids = rng.integers(0, len(VOCAB), n)
        context_ids = rng.integers(0, len(VOCAB), n)
        entropy = rng.gamma(2.0, 1.0, n)
        if ties:  # a third of the values on a coarse grid, and many exact zeros
            coarse = rng.random(n) < 0.33
            entropy[coarse] = np.round(entropy[coarse] * 2) / 2
            entropy[rng.random(n) < 0.15] = 0.0
        entropy[rng.random(n) < 0.02] = np.nan
        prob = rng.random(n)
        prob[rng.random(n) < 0.02] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "source": model,
                    "prompt_set": "set",
                    "prompt_id": rng.choice([f"p{i}" for i in range(12)], n),
                    "sample": rng.integers(0, 3, n).astype("int32"),
                    "step": np.arange(n, dtype="int32"),
                    "context_token_id": context_ids.astype("int32"),
                    "context_token": VOCAB[context_ids],
                    "token_id": ids.astype("int32"),
                    "token": VOCAB[ids],
                    "entropy": entropy.astype("float32"),
                    "prob": prob.astype("float32"),
                    "rank": rng.integers(1, 20, n).astype("int32"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_parquet(frame: pd.DataFrame, path, parts: int = 1) -> list:
    """Write the frame as `parts` parquet files (NaN kept as NaN, as the workflow writes it)."""
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        # from_pandas turns NaN into null: put the NaNs back as the scorer writes them
        for name in ("entropy", "prob"):
            column = pa.array(frame[name].to_numpy()[part], type=pa.float32(), from_pandas=False)
            table = table.set_column(table.schema.get_field_index(name), name, column)
        target = path / f"part-{i}.parquet" if parts > 1 else path
        pq.write_table(table, target, row_group_size=500)
        paths.append(target)
    return paths


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    frame = random_tokens(seed=7)
    (path,) = write_parquet(frame, folder / "tokens.parquet")
    return frame, path


# --- describe ----------------------------------------------------------------------------------


def reference_describe(frame: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    stats = frame[metric].astype("float64").groupby([frame[k] for k in by], sort=True).describe()
    stats = stats.reset_index()
    stats["count"] = stats["count"].astype("int64")
    return stats


@pytest.mark.parametrize("by", [KEYS, PER_PROMPT, ["model", "prompt_id", "sample"]])
@pytest.mark.parametrize("metric", ["entropy", "prob", "rank"])
def test_describe_equals_pandas(table, by, metric):
    frame, path = table
    got = describe_metric(path, metric, by=by)
    expected = reference_describe(frame, metric, by)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got[by], expected[by], check_dtype=False)
    assert got["count"].dtype == np.int64 and list(got["count"]) == list(expected["count"])
    for column in ["mean", "std", "min", "25%", "50%", "75%", "max"]:
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-10, atol=1e-12, err_msg=column)


def test_describe_takes_a_frame_a_relation_files_and_a_folder(table, tmp_path):
    frame, path = table
    expected = describe_metric(path, by=PER_PROMPT)
    write_parquet(frame, tmp_path, parts=3)
    con = connect()
    for tokens in (frame, token_relation(path, con=con), [path], tmp_path, sorted(tmp_path.glob("*.parquet"))):
        got = describe_metric(tokens, by=PER_PROMPT)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)


def test_describe_all_nan_group_and_no_grouping():
    frame = random_tokens(seed=1, n=50, models=("m1",))
    frame.loc[frame["prompt_id"] == "p3", "entropy"] = np.nan
    got = describe_metric(frame, by=PER_PROMPT).set_index("prompt_id")
    assert got.loc["p3", "count"] == 0 and got.loc["p3", ["mean", "std", "50%"]].isna().all()
    overall = describe_metric(frame, by=[])
    expected = frame["entropy"].astype("float64").describe()
    assert list(overall.columns) == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    assert overall["count"].iloc[0] == expected["count"]
    np.testing.assert_allclose(overall.iloc[0, 1:].astype(float), expected.iloc[1:], rtol=1e-10)


# --- qcut_bins ---------------------------------------------------------------------------------


def reference_qcut(frame: pd.DataFrame, metric: str, n_bins: int, samples_per_bin: int):
    """pd.qcut per model/source/prompt_set, empty bins dropped, samples evenly spaced in sorted bins."""
    bin_rows, sample_rows = [], []
    sample_cols = [c for c in SAMPLE_COLUMNS if c != metric]
    for key, group in frame.groupby(KEYS, sort=True):
        group = group[group[metric].notna()]
        values = group[metric].astype("float64")
        raw, edges = pd.qcut(values, n_bins, labels=False, retbins=True, duplicates="drop")
        if len(edges) < 2 or np.all(edges == edges[0]):
            codes, lower, upper = np.zeros(len(values), dtype=int), edges[:1], edges[:1]
        else:
            raw = raw.to_numpy().astype(int)
            used = np.unique(raw)
            renumber = np.full(len(edges) - 1, -1)
            renumber[used] = np.arange(len(used))
            codes, lower, upper = renumber[raw], edges[used], edges[used + 1]
        count = np.bincount(codes, minlength=len(lower))
        means = np.bincount(codes, weights=values.to_numpy(), minlength=len(lower)) / count
        shown = displayed_bins(len(lower))
        for b in range(len(lower)):
            bin_rows.append((*key, b, lower[b], upper[b], count[b], means[b], b in shown))
        rows = group.assign(bin=codes, _v=values.to_numpy()).sort_values(["bin", "_v", *sample_cols], kind="stable")
        for b in shown:
            in_bin = rows[rows["bin"] == b]
            take = _even_positions(len(in_bin), min(samples_per_bin, len(in_bin)))
            sample_rows.append(in_bin.iloc[take][["bin", *sample_cols, metric]])
    bins = pd.DataFrame(bin_rows, columns=[*KEYS, "bin", "lower", "upper", "count", f"mean_{metric}", "displayed"])
    return bins, pd.concat(sample_rows, ignore_index=True)


@pytest.mark.parametrize(
    ("metric", "n_bins", "samples_per_bin"),
    [("entropy", 10, 5), ("entropy", 7, 3), ("prob", 10, 4), ("rank", 5, 3), ("entropy", 1, 2), ("entropy", 40, 1)],
)
def test_qcut_bins_equal_pandas_qcut(table, metric, n_bins, samples_per_bin):
    frame, path = table
    bins, samples = qcut_bins(path, metric, n_bins, samples_per_bin)
    expected_bins, expected_samples = reference_qcut(frame, metric, n_bins, samples_per_bin)
    assert list(bins[KEYS + ["bin"]].itertuples(index=False)) == list(
        expected_bins[KEYS + ["bin"]].itertuples(index=False)
    )
    assert list(bins["count"]) == list(expected_bins["count"])
    assert list(bins["displayed"]) == list(expected_bins["displayed"])
    for column in ["lower", "upper", f"mean_{metric}"]:
        np.testing.assert_allclose(bins[column], expected_bins[column], rtol=1e-12, atol=1e-15, err_msg=column)
    # the same rows, in the same order
    columns = ["bin", *[c for c in SAMPLE_COLUMNS if c != metric], metric]
    pd.testing.assert_frame_equal(
        samples[columns].reset_index(drop=True), expected_samples[columns].reset_index(drop=True), check_dtype=False
    )
    assert samples[metric].dtype == frame[metric].dtype


def test_qcut_edges_on_ties_are_the_tied_values():
    # 1000 values on 4 levels: every quantile edge is one of the levels, and ties decide the bins
    frame = random_tokens(seed=3, n=1000, models=("m1",))
    frame["entropy"] = np.random.default_rng(0).choice(np.float32([0.0, 0.5, 1.0, 2.5]), 1000, p=[0.4, 0.3, 0.2, 0.1])
    bins, _ = qcut_bins(frame, n_bins=10)
    codes, edges = pd.qcut(frame["entropy"].astype("float64"), 10, labels=False, retbins=True, duplicates="drop")
    assert set(bins["lower"]) | set(bins["upper"]) <= {0.0, 0.5, 1.0, 2.5}
    np.testing.assert_array_equal(np.r_[bins["lower"], bins["upper"].iloc[-1]], edges)
    assert list(bins["count"]) == list(np.bincount(codes))


def test_qcut_is_the_same_for_any_split_into_files(table, tmp_path):
    frame, path = table
    write_parquet(frame.sample(frac=1.0, random_state=2), tmp_path, parts=4)  # other row order, 4 files
    for a, b in zip(qcut_bins(path), qcut_bins(tmp_path), strict=True):
        pd.testing.assert_frame_equal(a, b)


# --- token_groups ------------------------------------------------------------------------------


def reference_groups(frame: pd.DataFrame, by: str, metrics: tuple[str, ...], min_count: int, top_n: int):
    id_col = f"{by}_id"
    frame = frame.astype({m: "float64" for m in metrics})  # float64 means, as the analysis
    grouped = frame.groupby(["model", "source", "prompt_set", id_col], sort=True)
    table = grouped[list(metrics)].mean()
    table.columns = [f"mean_{m}" for m in metrics]
    table.insert(0, by, grouped[by].min())
    table.insert(1, "count", grouped.size())
    table = table.reset_index()
    table = table[table["count"] >= min_count]
    parts = []
    for _, group in table.groupby(KEYS, sort=True):
        for extreme, ascending in (("high", False), ("low", True)):
            order = group.sort_values(
                [f"mean_{metrics[0]}", "count", by, id_col], ascending=[ascending, False, True, True], kind="stable"
            )
            parts.append(order.head(top_n).assign(extreme=extreme))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("by", ["context_token", "token"])
@pytest.mark.parametrize(("min_count", "top_n"), [(5, 3), (1, 20), (300, 2)])
def test_token_groups_equal_pandas(table, by, min_count, top_n):
    frame, path = table
    got = token_groups(path, by=by, min_count=min_count, top_n=top_n)
    expected = reference_groups(frame, by, ("entropy", "prob"), min_count, top_n)
    assert list(got.columns) == [*KEYS, f"{by}_id", by, "count", "mean_entropy", "mean_prob", "extreme"]
    same = [*KEYS, f"{by}_id", by, "count", "extreme"]
    pd.testing.assert_frame_equal(got[same], expected[same], check_dtype=False)
    for column in ["mean_entropy", "mean_prob"]:
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-10)


def test_token_groups_by_id_keep_tokens_with_the_same_text_apart():
    frame = random_tokens(seed=5, n=400, models=("m1",))
    frame.loc[frame["token_id"] == 9, "token"] = VOCAB[8]  # ids 8 and 9 both read "y"
    got = token_groups(frame, by="token", min_count=1, top_n=20)
    ys = got[(got["token"] == "y") & (got["extreme"] == "high")]
    assert sorted(ys["token_id"]) == [8, 9]
    assert ys["count"].sum() == frame["token"].eq("y").sum()


def test_token_groups_without_ids_group_by_the_string():
    frame = random_tokens(seed=5, n=400, models=("m1",)).drop(columns=["token_id", "context_token_id"])
    got = token_groups(frame, by="token", metrics=("entropy",), min_count=1, top_n=3)
    assert list(got.columns) == [*KEYS, "token", "count", "mean_entropy", "extreme"]
    means = frame.groupby("token")["entropy"].mean().astype("float64").sort_values(ascending=False)
    assert list(got["token"].iloc[:3]) == list(means.index[:3])
    np.testing.assert_allclose(got["mean_entropy"].iloc[:3], means.iloc[:3], rtol=1e-6)


def test_duckdb_gets_sixty_percent_of_the_job_memory():
    assert duckdb_memory_mb(2000) == 1200 and duckdb_memory_mb(10) == 100
