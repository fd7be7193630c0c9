"""Which sequences get token-view pages and which prompts per-prompt figures (report.selection):
the stratified choice against hand-worked ranks, the DuckDB summaries against pandas, and the
one-line error for a listed prompt id that no prompt set has."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenscope.duckdb_tables import connect
from tokenscope.errors import ConfigError
from tokenscope.report.selection import (
    check_listed_prompts,
    choose_prompts,
    choose_sequences,
    prompt_mean_entropy,
    rows_of_prompts,
    sequence_summaries,
    stratified_ranks,
)

from helpers.paths import TEST_DATA


@pytest.mark.parametrize(
    ("count", "n", "expected"),
    [
        (10, 0, []),
        (10, 1, [4]),
        (10, 2, [0, 9]),
        (10, 3, [0, 4, 9]),  # round(4.5) = 4 (half to even) is the median (9 // 2)
        (11, 3, [0, 5, 10]),
        (10, 4, [0, 4, 6, 9]),  # 0, 3, 6, 9: the 3 nearest the median 4 becomes it
        (101, 5, [0, 25, 50, 75, 100]),
        (5, 5, [0, 1, 2, 3, 4]),
        (3, 24, [0, 1, 2]),
        (0, 24, []),
    ],
)
def test_stratified_ranks(count, n, expected):
    assert stratified_ranks(count, n).tolist() == expected


@pytest.mark.parametrize("count", [1, 2, 3, 7, 50, 1000])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 24])
def test_stratified_ranks_always_hold_the_ends_and_the_median(count, n):
    ranks = stratified_ranks(count, n).tolist()
    assert len(ranks) == min(n, count) and ranks == sorted(set(ranks))
    if n != 2:  # two ranks are the two ends
        assert (count - 1) // 2 in ranks
    if n >= 2:
        assert ranks[0] == 0 and ranks[-1] == count - 1


def write_tokens(path, rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    pq.write_table(
        pa.table(
            {
                "model": pa.array(frame["model"], pa.string()),
                "prompt_id": pa.array(frame["prompt_id"], pa.string()),
                "sample": pa.array(frame["sample"], pa.int32()),
                "step": pa.array(frame["step"], pa.int32()),
                "entropy": pa.array(frame["entropy"], pa.float32()),
                "logprob": pa.array(frame["logprob"], pa.float32()),
            }
        ),
        path,
        row_group_size=7,
    )
    return frame


@pytest.fixture
def tokens(tmp_path):
    """6 prompts x 2 samples, 3 to 8 tokens each, random entropies; a NaN entropy in one row."""
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {k: [] for k in ("model", "prompt_id", "sample", "step", "entropy", "logprob")}
    for p in range(6):
        for sample in range(2):
            n = int(rng.integers(3, 9))
            rows["model"] += ["m"] * n
            rows["prompt_id"] += [f"p{p}"] * n
            rows["sample"] += [sample] * n
            rows["step"] += list(range(n))
            rows["entropy"] += rng.gamma(2.0, 1.0, n).tolist()
            rows["logprob"] += (-rng.gamma(1.0, 1.0, n)).tolist()
    rows["entropy"][5] = float("nan")
    frame = write_tokens(tmp_path / "tokens.parquet", rows)
    return tmp_path / "tokens.parquet", frame.astype({"entropy": "float32", "logprob": "float32"})


def test_sequence_summaries_equal_pandas(tokens):
    path, frame = tokens
    summaries = sequence_summaries(connect(), path).to_pandas()
    frame = frame.assign(surprisal=-frame["logprob"].astype("float64"), entropy=frame["entropy"].astype("float64"))
    expected = (
        frame.groupby(["prompt_id", "sample"])
        .agg(
            n_tokens=("step", "size"),
            mean_entropy=("entropy", "mean"),
            max_entropy=("entropy", "max"),
            mean_surprisal=("surprisal", "mean"),
            max_surprisal=("surprisal", "max"),
        )
        .reset_index()
    )
    pd.testing.assert_frame_equal(summaries, expected, check_dtype=False, rtol=1e-12)


def test_choose_sequences_by_rank_of_mean_entropy_plus_listed(tokens):
    path, frame = tokens
    summaries = sequence_summaries(connect(), path)
    means = summaries.to_pandas()
    ranked = means.sort_values(["mean_entropy", "prompt_id", "sample"]).index.tolist()
    # 12 sequences, 3 chosen: ranks 0, 5 (the median, 11 // 2; round(5.5) = 6 is moved) and 11
    assert choose_sequences(summaries, 3).tolist() == sorted([ranked[0], ranked[5], ranked[11]])
    assert choose_sequences(summaries, 0).tolist() == []
    listed = choose_sequences(summaries, 0, ["p3", "nowhere"]).tolist()
    assert means.loc[listed, "prompt_id"].tolist() == ["p3", "p3"]
    both = choose_sequences(summaries, 2, ["p3"]).tolist()
    assert both == sorted({ranked[0], ranked[11], *listed})
    assert choose_sequences(summaries, 100).tolist() == list(range(12))


def test_choose_prompts_by_mean_entropy_of_all_samples(tokens):
    path, frame = tokens
    means = prompt_mean_entropy(connect(), path)
    expected = frame.astype({"entropy": "float64"}).groupby("prompt_id")["entropy"].mean()
    np.testing.assert_allclose(means.column("mean_entropy").to_numpy(), expected.to_numpy(), rtol=1e-12)
    ranked = expected.sort_values().index.tolist()
    assert choose_prompts(means, 3) == sorted([ranked[0], ranked[2], ranked[5]])
    assert choose_prompts(means, 1, ["p0"]) == sorted({ranked[2], "p0"})
    assert choose_prompts(means, 0) == []
    rows = rows_of_prompts(connect(), path, ["prompt_id", "step"], ["p1", "p4"]).to_pandas()
    assert sorted(set(rows["prompt_id"])) == ["p1", "p4"] and len(rows) == frame["prompt_id"].isin(["p1", "p4"]).sum()


def test_a_listed_prompt_in_no_prompt_set_is_one_line_naming_key_and_id():
    check_listed_prompts(["add", "fox"], [TEST_DATA / "tiny_a.jsonl"])
    check_listed_prompts([], [])
    with pytest.raises(ConfigError) as error:
        check_listed_prompts(["add", "nope"], [TEST_DATA / "tiny_a.jsonl", TEST_DATA / "tiny_a.jsonl"])
    message = str(error.value)
    assert "\n" not in message and message.startswith("token_view.prompt_ids: unknown prompt id 'nope'")
