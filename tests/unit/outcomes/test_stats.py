"""Outcome statistics (tokenscope.outcomes.stats) against exact references: pass@k against brute-force
enumeration of k-subsets, AUROC against the Mann-Whitney U of scipy, per-generation statistics in
DuckDB against pandas/numpy on the same rows, and the tables against their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from tokenscope.analysis.stats import draw_blocks, percentile_interval
from tokenscope.errors import ConfigError, TokenscopeError
from tokenscope.outcomes.stats import (
    GENERATION_STATISTICS,
    OutcomeOptions,
    auroc,
    bootstrap_p_value,
    generation_statistics,
    outcome_statistics,
    outcome_tables,
    pass_at_k,
    pass_at_k_values,
    weighted_auroc,
)

from helpers.outcomes import synthetic_run


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k([n], [c], k)[0] == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
    # pass@1 is c / n; k > n has no estimate; large n does not overflow.
    np.testing.assert_allclose(pass_at_k([4, 4, 10], [0, 3, 7], 1), [0.0, 0.75, 0.7])
    assert np.isnan(pass_at_k([2], [1], 3)[0])
    assert pass_at_k([1000], [1], 500)[0] == pytest.approx(0.5)
    assert pass_at_k([1000], [0], 999)[0] == 0.0
    assert pass_at_k([1000], [2], 999)[0] == 1.0
    exact = 1 - math.comb(600, 50) / math.comb(700, 50)
    assert pass_at_k([700], [100], 50)[0] == pytest.approx(exact, rel=1e-10)
    with pytest.raises(ValueError):
        pass_at_k([2], [3], 1)


def test_pass_at_k_values():
    assert pass_at_k_values(None, 4) == [1, 2, 3, 4]
    assert pass_at_k_values(2, 4) == [1, 2]
    assert pass_at_k_values([4, 1, 1], 4) == [1, 4]
    with pytest.raises(ConfigError, match=r"^outcomes.pass_at_k: k = 5 is greater than generation.n_samples = 4"):
        pass_at_k_values([1, 5], 4)
    with pytest.raises(ConfigError, match="outcomes.pass_at_k"):
        pass_at_k_values(8, 2)


def test_auroc_by_hand_and_against_mann_whitney():
    # positives (incorrect) 3, 5; negatives 1, 3, 4: pairs (3>1) (3=3: 1/2) (3<4) (5>1) (5>3) (5>4) -> 4.5 / 6
    assert auroc([3, 5, 1, 3, 4], [True, True, False, False, False]) == pytest.approx(4.5 / 6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40).astype(float)  # many ties
        positive = rng.random(40) < 0.4
        u = mannwhitneyu(scores[positive], scores[~positive], alternative="two-sided").statistic
        assert auroc(scores, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()))
    assert np.isnan(auroc([1.0, 2.0], [True, True]))
    assert auroc([1.0, np.inf], [False, True]) == 1.0


def test_weighted_auroc_counts_repeated_items():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=12).round(1)
    positive = rng.random(12) < 0.5
    positive[:2] = [True, False]
    weights = rng.integers(0, 4, size=(5, 12)).astype(float)
    weights[:, :2] = 1
    result = weighted_auroc(scores, positive, weights)
    for row, w in zip(result, weights, strict=True):
        repeated = np.repeat(np.arange(12), w.astype(int))
        assert row == pytest.approx(auroc(scores[repeated], positive[repeated]))


def test_bootstrap_p_value():
    assert bootstrap_p_value(np.zeros(10)) == 1.0
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == 0.5
    assert bootstrap_p_value(np.arange(1.0, 101.0)) == 0.0
    assert np.isnan(bootstrap_p_value(np.array([np.nan])))


# --- Tables from parquet files ----------------------------------------------------------------------


def test_generation_statistics_equal_pandas(tmp_path):
    tokens, generations = synthetic_run(tmp_path)
    table, threshold = generation_statistics(tokens, generations, "base", quantile=0.8)
    base_entropy = pd.read_parquet(tokens["base"])["entropy"].dropna().to_numpy(np.float64)
    assert threshold == pytest.approx(np.quantile(base_entropy, 0.8))
    assert len(table) == 2 * 6 * 3
    for model in ("base", "ckpt"):
        frame = pd.read_parquet(tokens[model])
        gens = pd.read_parquet(generations[model]).set_index(["prompt_id", "sample"])
        for (prompt, sample), rows in frame.groupby(["prompt_id", "sample"]):
            got = table[(table["model"] == model) & (table["prompt_id"] == prompt) & (table["sample"] == sample)]
            assert len(got) == 1
            got = got.iloc[0]
            entropy = rows["entropy"].dropna().to_numpy(np.float64)
            if entropy.size == 0:  # a one-token generation whose entropy is NaN
                assert got[["mean_entropy", "p90_entropy", "share_high_entropy"]].isna().all()
            else:
                assert got["mean_entropy"] == pytest.approx(entropy.mean())
                assert got["p90_entropy"] == pytest.approx(np.quantile(entropy, 0.9))
                assert got["share_high_entropy"] == pytest.approx((entropy > threshold).mean())
            assert got["max_surprisal"] == pytest.approx(-rows["logprob"].astype(np.float64).min())
            assert got["length"] == gens.loc[(prompt, sample), "n_tokens"]
            assert got["entropy_count"] == entropy.size and got["entropy_sum"] == pytest.approx(entropy.sum())
            expected = gens.loc[(prompt, sample), "correct"]
            assert (pd.isna(got["correct"]) and pd.isna(expected)) or got["correct"] == expected


def test_outcome_tables_match_definitions(tmp_path):
    tokens, generations = synthetic_run(tmp_path)
    options = OutcomeOptions(pass_at_k=(1, 2, 3), n_boot=300, ci=0.9, seed=1)
    per_generation, tables = outcome_statistics(tokens, generations, ["base", "ckpt"], options, prompt_set="s")
    assert set(tables) == {
        "accuracy",
        "pass_at_k",
        "auroc",
        "auroc_paired",
        "entropy_fit",
        "entropy_fit_points",
        "entropy_fit_curve",
    }
    answered = per_generation[per_generation["correct"].notna()]
    for index, model in enumerate(["base", "ckpt"]):
        rows = answered[answered["model"] == model]
        per_prompt = rows.groupby("prompt_id")["correct"].agg(["sum", "count"])
        accuracy = tables["accuracy"].set_index("model").loc[model]
        assert accuracy["checkpoint"] == index
        assert accuracy["estimate"] == pytest.approx((per_prompt["sum"] / per_prompt["count"]).mean())
        assert accuracy["n_units"] == 5 and accuracy["n_generations"] == 15
        assert accuracy["ci_low"] <= accuracy["estimate"] <= accuracy["ci_high"]
        assert accuracy["mean_entropy"] == pytest.approx(rows["entropy_sum"].sum() / rows["entropy_count"].sum())
        for k in (1, 2, 3):
            expected = np.mean(
                [brute_force_pass_at_k(int(n), int(c), k) for c, n in per_prompt[["sum", "count"]].to_numpy()]
            )
            row = tables["pass_at_k"].query("model == @model and k == @k").iloc[0]
            assert row["estimate"] == pytest.approx(expected)
        for name in GENERATION_STATISTICS:
            row = tables["auroc"].query("model == @model and statistic == @name").iloc[0]
            valid = rows[rows[name].notna()]
            assert row["auroc"] == pytest.approx(auroc(valid[name], ~valid["correct"].astype(bool)))
            assert row["n_correct"] + row["n_incorrect"] == len(valid)
    paired = tables["auroc_paired"]
    assert list(paired["model"].unique()) == ["ckpt"] and set(paired["statistic"]) == set(GENERATION_STATISTICS)
    np.testing.assert_allclose(paired["diff"], paired["auroc_model"] - paired["auroc_base"])
    assert (tables["accuracy"].query("model == 'base'")["diff_vs_base"] == 0).all()
    # The same seed gives the same numbers.
    _, again = outcome_statistics(tokens, generations, ["base", "ckpt"], options, prompt_set="s")
    for name, table in tables.items():
        pd.testing.assert_frame_equal(table, again[name])


def test_outcome_intervals_come_from_the_shared_resampling_core(tmp_path):
    """The accuracy CI is the percentile interval of the accuracy on the draws of
    tokenscope.analysis.stats with the same seed: one resampling core for analysis and outcomes."""
    tokens, generations = synthetic_run(tmp_path, models=("base",))
    per_generation, _ = generation_statistics(tokens, generations, "base")
    options = OutcomeOptions(n_boot=300, ci=0.9, seed=4)
    row = outcome_tables(per_generation, ["base"], options)["accuracy"].iloc[0]
    answered = per_generation[per_generation["correct"].notna()]
    per_prompt = answered.groupby("prompt_id")["correct"].agg(["sum", "count"]).sort_index()
    share = (per_prompt["sum"] / per_prompt["count"]).to_numpy(np.float64)
    draws = np.concatenate(list(draw_blocks(share.size, options.n_boot, options.seed, dtype=np.float64)))
    accuracy = (draws @ share) / draws.sum(axis=1)
    assert (row["ci_low"], row["ci_high"]) == percentile_interval(accuracy, options.ci)


def test_identical_checkpoint_has_zero_paired_difference(tmp_path):
    tokens, generations = synthetic_run(tmp_path, models=("base",))
    tokens["copy"], generations["copy"] = tokens["base"], generations["base"]
    per_generation, _ = generation_statistics(tokens, generations, "base")
    options = OutcomeOptions(pass_at_k=(1,), n_boot=200)
    # The copy's rows are labelled with its own name by generation_statistics.
    tables = outcome_tables(per_generation, ["base", "copy"], options)
    paired = tables["auroc_paired"]
    assert (paired["diff"] == 0).all() and (paired["ci_low"] == 0).all() and (paired["ci_high"] == 0).all()
    assert (paired["p_bootstrap"] == 1).all()
    accuracy = tables["accuracy"]
    assert (accuracy["diff_ci_low"] == 0).all() and (accuracy["diff_ci_high"] == 0).all()


def test_set_without_answers_is_one_line(tmp_path):
    tokens, generations = synthetic_run(tmp_path, with_answers=False)
    with pytest.raises(TokenscopeError, match=r"^outcomes.prompt_sets: prompt set 'math24' has no answers") as error:
        outcome_statistics(tokens, generations, ["base", "ckpt"], OutcomeOptions(), prompt_set="math24")
    assert "\n" not in str(error.value)


def test_generations_without_correct_column(tmp_path):
    tokens, generations = synthetic_run(tmp_path)
    pd.read_parquet(generations["ckpt"]).drop(columns="correct").to_parquet(generations["ckpt"])
    with pytest.raises(TokenscopeError, match="model 'ckpt' has no 'correct' column"):
        generation_statistics(tokens, generations, "base")
