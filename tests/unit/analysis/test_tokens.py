"""Token analyses (analysis.tokens) on synthetic tokens frames with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tokenscope.analysis.tokens import (
    describe_metric,
    displayed_bins,
    qcut_bins,
    to_markdown,
    token_groups,
    write_table,
)

TOKENS = [" the", "\n\n", "a|b", "x", "'q'", "1.50", "\t", "é"]


def make_tokens(n: int = 400, seed: int = 0, models: tuple[str, ...] = ("m1",), prompts: int = 3) -> pd.DataFrame:
    """A tokens frame with the workflow's columns and random metrics."""
    rng = np.random.default_rng(seed)
    frames = []
    for model in models:
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "source": model,
                    "prompt_set": "set",
                    "prompt_id": rng.choice([f"p{i}" for i in range(prompts)], n),
                    "sample": rng.integers(0, 2, n),
                    "step": np.arange(n),
                    "position": np.arange(n) + 10,
                    "segment": "completion",
                    "context_token": rng.choice(TOKENS, n),
                    "token": rng.choice(TOKENS, n),
                    "entropy": rng.gamma(2.0, 1.0, n).astype("float32"),
                    "prob": rng.random(n).astype("float32"),
                    "rank": rng.integers(1, 50, n).astype("int32"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# --- describe_metric -------------------------------------------------------------------------


def test_describe_matches_pandas_describe_per_group():
    tokens = make_tokens(models=("m1", "m2"))
    stats = describe_metric(tokens)
    assert list(stats.columns) == [
        "model",
        "source",
        "prompt_set",
        "count",
        "mean",
        "std",
        "min",
        "25%",
        "50%",
        "75%",
        "max",
    ]
    assert list(stats["model"]) == ["m1", "m2"]
    for _, row in stats.iterrows():
        expected = tokens.loc[tokens["model"] == row["model"], "entropy"].astype("float64").describe()
        assert row["count"] == expected["count"] == 400
        for stat in ["mean", "std", "min", "25%", "50%", "75%", "max"]:
            assert row[stat] == pytest.approx(expected[stat], rel=1e-12)


def test_describe_per_prompt_gives_one_row_per_prompt():
    tokens = make_tokens(prompts=4)
    stats = describe_metric(tokens, "prob", by=["model", "source", "prompt_set", "prompt_id"])
    assert list(stats["prompt_id"]) == ["p0", "p1", "p2", "p3"]
    assert stats["count"].sum() == len(tokens)
    p2 = tokens.loc[tokens["prompt_id"] == "p2", "prob"].astype("float64")
    row = stats.set_index("prompt_id").loc["p2"]
    assert row["mean"] == pytest.approx(p2.mean()) and row["75%"] == pytest.approx(p2.quantile(0.75))


def test_describe_missing_column_is_a_clear_error():
    with pytest.raises(KeyError, match="prompt_id"):
        describe_metric(make_tokens().drop(columns="prompt_id"), by=["prompt_id"])


# --- qcut_bins ---------------------------------------------------------------------------------


def test_displayed_bins_are_the_notebooks():
    assert displayed_bins(10) == [0, 2, 5, 7, 9]
    assert displayed_bins(4) == [0, 1, 2, 3]
    assert displayed_bins(1) == [0]
    assert displayed_bins(0) == []


def test_qcut_bins_match_pandas_qcut():
    tokens = make_tokens(n=1000)
    tokens["entropy"] = np.random.default_rng(1).normal(size=1000)  # float64: compare edges exactly
    bins, samples = qcut_bins(tokens, "entropy", n_bins=10, samples_per_bin=5)
    codes, edges = pd.qcut(tokens["entropy"], 10, labels=False, retbins=True, duplicates="drop")
    assert list(bins["bin"]) == list(range(10))
    np.testing.assert_allclose(bins["lower"], edges[:-1])
    np.testing.assert_allclose(bins["upper"], edges[1:])
    assert list(bins["count"]) == list(np.bincount(codes))
    np.testing.assert_allclose(bins["mean_entropy"], tokens["entropy"].groupby(codes).mean())
    assert list(bins.index[bins["displayed"]]) == [0, 2, 5, 7, 9]
    assert set(bins["model"]) == {"m1"} and set(bins["prompt_set"]) == {"set"}

    assert list(samples.columns) == [
        "model",
        "source",
        "prompt_set",
        "bin",
        "bin_range",
        "prompt_id",
        "sample",
        "step",
        "context_token",
        "token",
        "entropy",
    ]
    assert samples.groupby("bin").size().to_dict() == {0: 5, 2: 5, 5: 5, 7: 5, 9: 5}
    for b, rows in samples.groupby("bin"):
        in_bin = np.sort(tokens["entropy"].to_numpy()[codes.to_numpy() == b])
        values = rows["entropy"].to_numpy()
        assert np.all(np.diff(values) >= 0)
        # evenly spaced over the sorted bin: its lowest and highest value are both shown
        assert values[0] == in_bin[0] and values[-1] == in_bin[-1]
        np.testing.assert_array_equal(values, in_bin[np.rint(np.linspace(0, len(in_bin) - 1, 5)).astype(int)])
        assert (rows["bin_range"] == rows["bin_range"].iloc[0]).all()
    # the sampled rows are real rows of the frame
    merged = samples.merge(tokens, on=["prompt_id", "sample", "step", "context_token", "token", "entropy"])
    assert len(merged) == len(samples)
    assert samples["bin_range"].iloc[0].startswith("[") and samples["bin_range"].iloc[-1].startswith("(")


def test_qcut_samples_are_exactly_the_bin_size_when_bins_are_small():
    tokens = make_tokens(n=23)
    bins, samples = qcut_bins(tokens, n_bins=10, samples_per_bin=5)
    assert bins["count"].sum() == 23
    shown = bins[bins["displayed"]]
    assert samples.groupby("bin").size().to_dict() == {
        b: min(5, c) for b, c in zip(shown["bin"], shown["count"], strict=True)
    }
    assert samples.duplicated(["prompt_id", "sample", "step"]).sum() == 0


def test_qcut_duplicate_edges_are_dropped():
    # 60% zeros: the lower quantile edges coincide and pd.qcut merges those bins
    values = np.concatenate([np.zeros(60), np.arange(1.0, 41.0)])
    tokens = make_tokens(n=100).assign(entropy=values)
    bins, samples = qcut_bins(tokens, n_bins=10)
    codes, edges = pd.qcut(values, 10, labels=False, retbins=True, duplicates="drop")
    assert len(bins) == len(edges) - 1 == 5
    assert list(bins["count"]) == [60, 10, 10, 10, 10]
    assert list(bins["displayed"]) == [True, True, True, True, True]  # n=5: 0, 1, 2, 3, 4
    assert samples.groupby("bin").size().tolist() == [5] * 5
    assert (samples.loc[samples["bin"] == 0, "entropy"] == 0).all()


def test_qcut_constant_metric_is_one_bin():
    tokens = make_tokens(n=50).assign(entropy=np.float32(0.25))
    bins, samples = qcut_bins(tokens)
    assert len(bins) == 1
    row = bins.iloc[0]
    assert (row["bin"], row["lower"], row["upper"], row["count"], row["displayed"]) == (0, 0.25, 0.25, 50, True)
    assert len(samples) == 5 and (samples["bin"] == 0).all()
    # evenly spaced over the bin (rint of linspace(0, 49, 5)), tied rows ordered by prompt_id, sample, step
    ordered = tokens.sort_values(["prompt_id", "sample", "step"], ignore_index=True)
    assert list(samples["step"]) == list(ordered["step"].iloc[[0, 12, 24, 37, 49]])


def test_qcut_fewer_rows_than_bins_keeps_only_non_empty_bins():
    tokens = make_tokens(n=3).assign(entropy=[0.0, 1.0, 2.0])
    bins, samples = qcut_bins(tokens, n_bins=10)
    assert list(bins["bin"]) == [0, 1, 2]
    assert list(bins["count"]) == [1, 1, 1]
    assert list(bins["mean_entropy"]) == [0.0, 1.0, 2.0]
    assert (bins["lower"] <= bins["mean_entropy"]).all() and (bins["mean_entropy"] <= bins["upper"]).all()
    assert list(samples["entropy"]) == [0.0, 1.0, 2.0]


def test_qcut_runs_per_model_and_skips_nan():
    tokens = make_tokens(n=200, models=("m1", "m2"))
    tokens.loc[tokens["model"] == "m2", "entropy"] += 100  # a pooled qcut would give m2 only the top bins
    tokens.loc[[0, 1], "entropy"] = np.nan
    bins, samples = qcut_bins(tokens, n_bins=4, samples_per_bin=2)
    assert bins.groupby("model")["count"].sum().to_dict() == {"m1": 198, "m2": 200}
    assert bins.groupby("model").size().to_dict() == {"m1": 4, "m2": 4}
    assert samples.groupby("model").size().to_dict() == {"m1": 8, "m2": 8}
    assert samples["entropy"].notna().all()


def test_qcut_integer_metric_keeps_its_dtype_in_samples():
    tokens = make_tokens(n=300)
    bins, samples = qcut_bins(tokens, "rank", n_bins=5, samples_per_bin=3)
    codes = pd.qcut(tokens["rank"], 5, labels=False, duplicates="drop")
    assert list(bins["count"]) == list(np.bincount(codes))
    assert samples["rank"].dtype == np.int32 and "mean_rank" in bins.columns
    assert len(samples) == 3 * len(displayed_bins(len(bins)))


def test_qcut_empty_frame_gives_empty_tables_with_columns():
    bins, samples = qcut_bins(make_tokens(n=0))
    assert bins.empty and "displayed" in bins.columns
    assert samples.empty and "bin_range" in samples.columns


# --- token_groups ------------------------------------------------------------------------------


def grouped_frame() -> pd.DataFrame:
    """Context tokens t0..t9 with mean entropy 0..9 and 10 tokens each, plus a rare 'rare' of entropy 99."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(10):
        noise = rng.normal(0, 0.1, 10)
        rows.append(
            pd.DataFrame({"context_token": f"t{i}", "token": "y", "entropy": i + noise - noise.mean(), "prob": 0.5})
        )
    rows.append(pd.DataFrame({"context_token": ["rare"] * 2, "token": "y", "entropy": 99.0, "prob": 0.1}))
    frame = pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=0)  # order must not matter
    return frame.assign(model="m1", source="m1", prompt_set="set")


def test_token_groups_top_and_bottom_with_min_count():
    groups = token_groups(grouped_frame(), by="context_token", min_count=5, top_n=3)
    assert list(groups.columns) == [
        "model",
        "source",
        "prompt_set",
        "context_token",
        "count",
        "mean_entropy",
        "mean_prob",
        "extreme",
    ]
    assert "rare" not in set(groups["context_token"])  # 2 tokens < min_count
    assert list(groups["context_token"]) == ["t9", "t8", "t7", "t0", "t1", "t2"]
    assert list(groups["extreme"]) == ["high"] * 3 + ["low"] * 3
    np.testing.assert_allclose(groups["mean_entropy"], [9, 8, 7, 0, 1, 2], atol=1e-9)
    assert (groups["count"] == 10).all()
    assert groups["mean_prob"].tolist() == pytest.approx([0.5] * 6)


def test_token_groups_min_count_keeps_rare_groups_when_allowed():
    groups = token_groups(grouped_frame(), min_count=1, top_n=1)
    assert groups[["context_token", "count", "extreme"]].values.tolist() == [["rare", 2, "high"], ["t0", 10, "low"]]


def test_token_groups_few_groups_appear_in_both_lists():
    groups = token_groups(grouped_frame(), min_count=5, top_n=20)
    assert (groups["extreme"] == "high").sum() == 10 and (groups["extreme"] == "low").sum() == 10
    assert list(groups.loc[groups["extreme"] == "high", "context_token"]) == [f"t{i}" for i in range(9, -1, -1)]
    assert list(groups.loc[groups["extreme"] == "low", "context_token"]) == [f"t{i}" for i in range(10)]


def test_token_groups_by_token_and_per_model():
    a = grouped_frame()
    b = grouped_frame().assign(model="m2", source="m2", entropy=lambda f: -f["entropy"])
    frame = pd.concat([a, b], ignore_index=True).rename(columns={"context_token": "token", "token": "context_token"})
    groups = token_groups(frame, by="token", metrics=("entropy",), min_count=5, top_n=1)
    assert list(groups.columns) == ["model", "source", "prompt_set", "token", "count", "mean_entropy", "extreme"]
    assert groups[["model", "token", "extreme"]].values.tolist() == [
        ["m1", "t9", "high"],
        ["m1", "t0", "low"],
        ["m2", "t0", "high"],
        ["m2", "t9", "low"],
    ]


def test_token_groups_nothing_left_gives_empty_table():
    groups = token_groups(grouped_frame(), min_count=1000)
    assert groups.empty and "extreme" in groups.columns


# --- markdown and files ------------------------------------------------------------------------


def test_markdown_makes_token_strings_distinguishable():
    frame = pd.DataFrame(
        {
            "token": ["the", " the", "\n\n", "a|b", "", "1.50", "'q'"],
            "entropy": [1.0, 2.0, 0.123456, np.nan, 5.0, 6.0, 7.0],
        }
    )
    text = to_markdown(frame, title="Tokens")
    lines = text.splitlines()
    assert lines[0] == "## Tokens" and lines[1] == ""
    table = lines[2:]
    assert len(table) == 2 + len(frame)  # a newline token must not break a row
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    cells = [[c.strip() for c in line.split(" | ")] for line in table[2:]]
    tokens = [row[0].lstrip("| ").strip() for row in cells]
    assert tokens == ["the", "' the'", r"'\n\n'", r"a\|b", "''", "1.50", "\"'q'\""]
    assert "0.1235" in text and "2.0000" in text
    assert table[1].endswith("-:|")  # numbers right-aligned


def test_markdown_shows_a_named_index():
    frame = pd.DataFrame({"x": [1, 2]}, index=pd.Index(["a", "b"], name="key"))
    text = to_markdown(frame)
    assert text.splitlines()[0].replace(" ", "") == "|key|x|"


def test_write_table_writes_csv_and_markdown(tmp_path):
    frame = pd.DataFrame({"token": [" the", "\n"], "count": [3, 4]})
    csv, md = tmp_path / "a" / "b" / "t.csv", tmp_path / "c" / "t.md"
    write_table(frame, csv, md, "A table")
    pd.testing.assert_frame_equal(pd.read_csv(csv, keep_default_na=False), frame)
    assert md.read_text().startswith("## A table\n")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["t.csv", "t.md"]  # no temp files left
