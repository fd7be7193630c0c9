"""Prompt-level statistics: known answers, calibration in simulation, and reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from tokenscope.analysis.stats import (
    BootstrapOptions,
    TokenChangeOptions,
    TrendMeasures,
    adjust_pvalues,
    bootstrap_summary,
    changed_tokens,
    checkpoint_trends,
    cluster_bootstrap,
    draw_blocks,
    high_entropy_overlap,
    paired_tests,
    per_unit_means,
    rank_biserial,
    resample_counts,
    share_above,
    sign_flip_pvalue,
    statistic_quantile,
    token_changes,
)
from tokenscope.errors import ConfigError, TokenscopeError


def clustered_values(
    rng: np.random.Generator,
    n_clusters: int,
    mean: float = 0.0,
    cluster_sd: float = 1.0,
    token_sd: float = 1.0,
    sizes: tuple[int, int] = (20, 60),
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens that share a random effect within their cluster (prompt), of varied cluster sizes."""
    size = rng.integers(*sizes, n_clusters)
    clusters = np.repeat(np.arange(n_clusters), size)
    effects = rng.normal(0, cluster_sd, n_clusters)
    return mean + effects[clusters] + rng.normal(0, token_sd, clusters.size), clusters


def tokens_frame(
    rng: np.random.Generator, models: dict[str, float], n_prompts: int = 12, length: int = 30
) -> pd.DataFrame:
    """A per-token frame: every model scored on the same tokens; model entropy = base + shift + noise."""
    prompt = np.repeat([f"p{i:02d}" for i in range(n_prompts)], length)
    position = np.tile(np.arange(10, 10 + length), n_prompts)
    token_id = rng.integers(0, 15, prompt.size)
    shared = rng.gamma(2.0, 0.5, prompt.size)
    frames = [
        pd.DataFrame(
            {
                "model": name,
                "source": "reference",
                "prompt_set": "t",
                "prompt_id": prompt,
                "sample": 0,
                "position": position,
                "context_token_id": np.roll(token_id, 1),
                "token_id": token_id,
                "entropy": shared + shift + rng.normal(0, 0.1, prompt.size),
            }
        )
        for name, shift in models.items()
    ]
    return pd.concat(frames, ignore_index=True)


# --- Bootstrap -------------------------------------------------------------------------------------


def test_resample_counts_draw_each_unit_with_equal_chance():
    counts = resample_counts(5, 20_000, np.random.default_rng(0))
    assert (counts.sum(axis=1) == 5).all()
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.03)


def test_draw_blocks_are_resamples_and_reproducible():
    """Blocks of at most BLOCK_CELLS / width resamples; the same seed and sizes give the same draws."""
    blocks = list(draw_blocks(7, 50, seed=3, width=7 * 100_000))  # tiny blocks
    assert len(blocks) > 1
    counts = np.concatenate(blocks)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    again = np.concatenate(list(draw_blocks(7, 50, seed=3, width=7 * 100_000)))
    np.testing.assert_array_equal(counts, again)


def test_point_estimates_are_the_plain_statistics():
    rng = np.random.default_rng(1)
    values, clusters = clustered_values(rng, 10)
    values[3] = np.nan  # left out
    got = cluster_bootstrap(
        values, clusters.astype(str), ("mean", "median", "p90", "p99"), boot=BootstrapOptions(n_boot=200)
    )
    finite = values[~np.isnan(values)]
    assert got["mean"].estimate == pytest.approx(finite.mean())
    for name, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert got[name].estimate == pytest.approx(np.quantile(finite, q))
        assert got[name].ci_low <= got[name].estimate <= got[name].ci_high
    assert got["mean"].n_units == 10 and got["mean"].n_tokens == finite.size


def test_statistic_names():
    assert statistic_quantile("mean") is None
    assert statistic_quantile("median") == 0.5
    assert statistic_quantile("p99.9") == pytest.approx(0.999)
    with pytest.raises(ConfigError, match="unknown statistic"):
        statistic_quantile("p120")


def test_cluster_bootstrap_at_the_intended_size():
    """~50k tokens in 48 prompts, 2000 resamples, four statistics (its cost: tests of stats_grid)."""
    values, clusters = clustered_values(np.random.default_rng(2), 48, sizes=(600, 1500))
    got = cluster_bootstrap(values, clusters, ("mean", "median", "p90", "p99"), boot=BootstrapOptions(n_boot=2000))
    for name, estimate in got.items():
        assert estimate.ci_low < estimate.estimate < estimate.ci_high, name
        assert estimate.ci_resolution < 1e-3 * (estimate.ci_high - estimate.ci_low), name


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(200):
        values, clusters = clustered_values(rng, 30, mean=2.0)
        ci = cluster_bootstrap(values, clusters, boot=BootstrapOptions(n_boot=400, seed=int(rng.integers(1 << 31))))[
            "mean"
        ]
        covered += ci.ci_low <= 2.0 <= ci.ci_high
    # percentile intervals with 30 clusters run a little short of 95%
    assert 0.86 <= covered / 200 <= 0.99


def test_cluster_intervals_are_wider_than_token_intervals_when_tokens_are_correlated():
    values, clusters = clustered_values(np.random.default_rng(4), 30, cluster_sd=1.0, token_sd=0.5)
    by_cluster = cluster_bootstrap(values, clusters, boot=BootstrapOptions(n_boot=1000))["mean"]
    by_token = cluster_bootstrap(values, np.arange(values.size), boot=BootstrapOptions(n_boot=1000))["mean"]
    assert by_cluster.estimate == pytest.approx(by_token.estimate)

    def width(e):
        return e.ci_high - e.ci_low

    assert width(by_cluster) > 3 * width(by_token)
    # independent tokens: both kinds of interval agree roughly
    independent, clusters = clustered_values(np.random.default_rng(5), 30, cluster_sd=0.0)
    ratio = width(cluster_bootstrap(independent, clusters, boot=BootstrapOptions(n_boot=1000))["mean"]) / width(
        cluster_bootstrap(independent, np.arange(independent.size), boot=BootstrapOptions(n_boot=1000))["mean"]
    )
    assert 0.7 < ratio < 1.4


def test_same_seed_same_numbers_other_seed_other_numbers():
    values, clusters = clustered_values(np.random.default_rng(6), 20)

    def run(seed):
        return cluster_bootstrap(values, clusters, ("mean", "p90"), boot=BootstrapOptions(n_boot=300, seed=seed))

    assert run(7) == run(7)
    assert run(7)["mean"].ci_low != run(8)["mean"].ci_low
    frame = tokens_frame(np.random.default_rng(0), {"base": 0.0, "rl": 0.2})
    per_unit = per_unit_means(frame, "entropy")
    pd.testing.assert_frame_equal(
        paired_tests(per_unit, "base", n_perm=500, boot=BootstrapOptions(n_boot=300, seed=1)),
        paired_tests(per_unit, "base", n_perm=500, boot=BootstrapOptions(n_boot=300, seed=1)),
    )
    pd.testing.assert_frame_equal(
        bootstrap_summary(frame, ["entropy"], boot=BootstrapOptions(n_boot=300, seed=2)),
        bootstrap_summary(frame, ["entropy"], boot=BootstrapOptions(n_boot=300, seed=2)),
    )


def test_bootstrap_summary_is_tidy():
    frame = tokens_frame(np.random.default_rng(1), {"base": 0.0, "rl": 0.5})
    frame["prob"] = np.exp(-frame["entropy"])
    frame.loc[5, "prob"] = np.nan
    summary = bootstrap_summary(frame, ["entropy", "prob"], boot=BootstrapOptions(n_boot=300))
    assert list(summary.columns) == [
        "model",
        "source",
        "prompt_set",
        "metric",
        "statistic",
        "estimate",
        "ci_low",
        "ci_high",
        "n_units",
        "n_tokens",
        "ci_resolution",
    ]
    assert len(summary) == 2 * 2 * 4
    row = summary.set_index(["model", "metric", "statistic"])
    base = frame[frame["model"] == "base"]
    assert row.loc[("base", "entropy", "mean"), "estimate"] == pytest.approx(base["entropy"].mean())
    assert row.loc[("rl", "entropy", "p90"), "estimate"] == pytest.approx(
        frame[frame["model"] == "rl"]["entropy"].quantile(0.9)
    )
    assert row.loc[("base", "prob", "mean"), "n_tokens"] == len(base) - 1
    assert (summary["n_units"] == 12).all()
    assert (summary["ci_low"] <= summary["estimate"]).all() and (summary["estimate"] <= summary["ci_high"]).all()
    by_prompt_sample = bootstrap_summary(
        frame,
        ["entropy"],
        unit_columns=("prompt_id", "sample"),
        group_columns=("model",),
        statistics=("mean",),
        boot=BootstrapOptions(n_boot=100),
    )
    assert list(by_prompt_sample["model"]) == ["base", "rl"]


# --- Paired tests ---------------------------------------------------------------------------------


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    # BH: sorted 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 -> running min from the top
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_pvalues([0.5, np.nan, 0.2], "holm"), [0.5, np.nan, 0.4])
    np.testing.assert_allclose(adjust_pvalues([0.6, 0.7], "holm"), [1.0, 1.0])
    np.testing.assert_allclose(adjust_pvalues(p, "none"), p)
    with pytest.raises(ConfigError, match="correction"):
        adjust_pvalues(p, "bonferroni")  # type: ignore[arg-type]


def test_rank_biserial_by_hand():
    # |d| ranks 1, 2, 3, 4; W+ = 1 + 2 + 3 = 6, W- = 4 -> (6 - 4) / 10
    assert rank_biserial(np.array([1.0, 2.0, 3.0, -4.0, 0.0])) == pytest.approx(0.2)
    assert rank_biserial(np.array([0.5, 1.0])) == 1.0 and rank_biserial(np.array([-0.5, -1.0])) == -1.0


def test_exact_sign_flip_test():
    # all 5 differences positive: only the observed pattern and its mirror are as extreme
    p, exact = sign_flip_pvalue(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), n_perm=1000)
    assert exact and p == pytest.approx(2 / 32)
    p, exact = sign_flip_pvalue(np.array([1.0, -1.0, 2.0, -2.0]), n_perm=1000)
    assert exact and p == 1.0
    p, exact = sign_flip_pvalue(np.arange(1.0, 21.0), n_perm=999, seed=0)
    assert not exact and p == pytest.approx(1 / 1000)  # (0 + 1) / (n_perm + 1)


def simulated_pairs(rng: np.random.Generator, n_units: int, shift: float) -> pd.DataFrame:
    """Per-prompt means of two models; prompts differ a lot, models by `shift` plus noise."""
    prompt_effect = rng.normal(0, 2.0, n_units)
    return pd.DataFrame(
        {"base": prompt_effect + rng.normal(0, 1, n_units), "other": prompt_effect + shift + rng.normal(0, 1, n_units)}
    )


def test_paired_tests_reject_at_about_alpha_under_the_null():
    rng = np.random.default_rng(8)
    rejected = {"p_wilcoxon": 0, "p_permutation": 0}
    for experiment in range(200):
        result = paired_tests(
            simulated_pairs(rng, 25, 0.0), "base", n_perm=999, boot=BootstrapOptions(n_boot=50, seed=experiment)
        )
        for column in rejected:
            rejected[column] += bool(result.loc[0, column] < 0.05)
    # Binomial(200, 0.05): mean 10, sd 3.1; allow 3.5 sd above and some conservatism below
    for column, count in rejected.items():
        assert 2 <= count <= 21, (column, count)


def test_paired_tests_detect_a_shift():
    result = paired_tests(
        simulated_pairs(np.random.default_rng(9), 30, 1.0), "base", n_perm=2000, boot=BootstrapOptions(n_boot=1000)
    )
    row = result.iloc[0]
    assert row["n_units"] == 30 and row["model"] == "other" and row["base"] == "base"
    assert row["p_wilcoxon"] < 0.01 and row["p_permutation"] < 0.01 and row["significant"]
    assert row["rank_biserial"] > 0.5
    assert 0 < row["diff_ci_low"] < row["mean_diff"] < row["diff_ci_high"]
    assert row["mean_diff"] == pytest.approx(row["mean_model"] - row["mean_base"])
    pair = simulated_pairs(np.random.default_rng(9), 30, 1.0)
    assert row["p_wilcoxon"] == pytest.approx(scipy_stats.wilcoxon(pair["other"] - pair["base"]).pvalue)


def test_paired_tests_correct_over_a_series_of_checkpoints():
    rng = np.random.default_rng(10)
    base = rng.normal(0, 1, 20)
    per_unit = pd.DataFrame({"base": base, **{f"ckpt{i}": base + rng.normal(0.1 * i, 0.5, 20) for i in range(1, 6)}})
    per_unit.loc[3, "ckpt2"] = np.nan  # that unit is left out of ckpt2's pairs only
    result = paired_tests(per_unit, "base", n_perm=500, boot=BootstrapOptions(n_boot=200))
    assert result["model"].tolist() == [f"ckpt{i}" for i in range(1, 6)]
    assert result.set_index("model").loc["ckpt2", "n_units"] == 19
    np.testing.assert_allclose(result["p_wilcoxon_adj"], adjust_pvalues(result["p_wilcoxon"], "holm"))
    np.testing.assert_allclose(result["p_permutation_adj"], adjust_pvalues(result["p_permutation"], "holm"))
    assert (result["p_wilcoxon_adj"] >= result["p_wilcoxon"]).all()
    assert (result["significant"] == (result["p_wilcoxon_adj"] < 0.05)).all()
    bh = paired_tests(per_unit, "base", n_perm=500, boot=BootstrapOptions(n_boot=200), correction="bh")
    assert (bh["p_wilcoxon_adj"] <= result["p_wilcoxon_adj"] + 1e-12).all()


def test_identical_models_are_not_different():
    per_unit = pd.DataFrame({"base": [1.0, 2.0, 3.0], "same": [1.0, 2.0, 3.0]})
    row = paired_tests(per_unit, "base", boot=BootstrapOptions(n_boot=100)).iloc[0]
    assert row["p_wilcoxon"] == 1.0 and row["p_permutation"] == 1.0 and row["mean_diff"] == 0.0
    assert row["rank_biserial"] == 0.0 and not row["significant"]


def test_per_unit_means():
    frame = tokens_frame(np.random.default_rng(11), {"base": 0.0, "rl": 1.0}, n_prompts=4)
    per_unit = per_unit_means(frame, "entropy")
    assert list(per_unit.columns) == ["base", "rl"] and len(per_unit) == 4
    expected = frame[(frame["model"] == "rl") & (frame["prompt_id"] == "p02")]["entropy"].mean()
    assert per_unit.loc["p02", "rl"] == pytest.approx(expected)


# --- High-entropy tokens --------------------------------------------------------------------------


def test_share_above():
    values = np.array([0.1, 0.5, 0.9, 1.5, 2.0, np.nan])
    got = share_above(values, 0.8, ["a", "a", "b", "b", "c", "c"], boot=BootstrapOptions(n_boot=200))
    assert got.estimate == pytest.approx(3 / 5) and got.n_tokens == 5 and got.n_units == 3
    assert 0 <= got.ci_low <= got.estimate <= got.ci_high <= 1


def test_high_entropy_overlap_of_itself_and_of_noise():
    rng = np.random.default_rng(12)
    entropy, clusters = clustered_values(rng, 48, sizes=(800, 1200))
    itself = high_entropy_overlap(entropy, entropy, clusters, boot=BootstrapOptions(n_boot=300))
    assert itself.estimate == 1.0 and itself.ci_low == 1.0
    assert itself.n_tokens == pytest.approx(0.2 * entropy.size, rel=0.01)
    noise = high_entropy_overlap(entropy, rng.normal(size=entropy.size), clusters, boot=BootstrapOptions(n_boot=300))
    assert noise.estimate == pytest.approx(0.2, abs=0.015)
    assert noise.ci_low < 0.2 < noise.ci_high
    similar = high_entropy_overlap(
        entropy, entropy + rng.normal(0, 0.3, entropy.size), clusters, boot=BootstrapOptions(n_boot=300)
    )
    assert 0.5 < similar.estimate < 1.0
    assert high_entropy_overlap(entropy, entropy, clusters, quantile=0.5).estimate == 1.0


# --- Trends and changed tokens --------------------------------------------------------------------


def test_checkpoint_trends():
    rng = np.random.default_rng(13)
    frame = tokens_frame(rng, {"base": 0.0, "step100": 0.0, "step200": -0.3})
    noise = frame["model"] == "step200"
    frame.loc[noise, "entropy"] = rng.gamma(2.0, 0.5, noise.sum())  # unrelated to the base's
    keys = frame[frame["model"] == "base"][["prompt_id", "sample", "position", "token_id"]]
    pairs = pd.concat(
        [
            keys.assign(model_a="base", model_b="step100", kl_a_b=0.1, kl_b_a=0.2),
            keys.assign(model_a="step200", model_b="base", kl_a_b=0.5, kl_b_a=0.4),  # the other order
        ]
    )
    trends = checkpoint_trends(frame, ["base", "step100", "step200"], pairs=pairs, boot=BootstrapOptions(n_boot=200))
    assert list(trends.columns) == [
        "checkpoint",
        "model",
        "measure",
        "estimate",
        "ci_low",
        "ci_high",
        "n_units",
        "n_tokens",
        "ci_resolution",
    ]
    value = trends.set_index(["model", "measure"])["estimate"]
    assert value[("base", "high_entropy_overlap")] == 1.0
    assert value[("base", "share_above_base_p80")] == pytest.approx(0.2, abs=0.01)
    assert value[("step100", "high_entropy_overlap")] > 0.7
    assert value[("step200", "high_entropy_overlap")] < 0.45
    assert value[("base", "mean_entropy")] == pytest.approx(frame[frame["model"] == "base"]["entropy"].mean())
    assert value[("step100", "mean_kl_base_model")] == pytest.approx(0.1)
    assert value[("step200", "mean_kl_base_model")] == pytest.approx(0.4)  # KL(base || step200)
    assert value[("step200", "mean_kl_model_base")] == pytest.approx(0.5)
    assert ("base", "mean_kl_base_model") not in value.index
    assert trends.groupby("model")["checkpoint"].first().to_dict() == {"base": 0, "step100": 1, "step200": 2}

    own_generations = frame.assign(token_id=np.where(frame["model"] == "step200", 99, frame["token_id"]))
    with pytest.raises(TokenscopeError, match="same tokens"):
        checkpoint_trends(own_generations, ["base", "step200"], boot=BootstrapOptions(n_boot=10))
    without_overlap = checkpoint_trends(
        own_generations, ["base", "step200"], measures=TrendMeasures(overlap=False), boot=BootstrapOptions(n_boot=10)
    )
    assert "high_entropy_overlap" not in set(without_overlap["measure"])


def test_changed_tokens():
    rng = np.random.default_rng(14)
    base = tokens_frame(rng, {"base": 0.0}, n_prompts=10, length=40)
    other = base.assign(model="rl")
    token = other["token_id"]
    other["entropy"] = base["entropy"] + np.where(token == 3, 1.0, np.where(token == 7, -0.5, 0.0))
    other.loc[(token == 5).to_numpy().nonzero()[0][:1], "entropy"] += 5.0  # one token: below min_count
    table = changed_tokens(
        base, other, "entropy", listing=TokenChangeOptions(min_count=5, top_n=3), boot=BootstrapOptions(n_boot=300)
    )
    assert list(table.columns) == [
        "token_id",
        "count",
        "n_units",
        "mean_base",
        "mean_other",
        "mean_diff",
        "ci_low",
        "ci_high",
        "direction",
    ]
    up, down = table[table["direction"] == "up"], table[table["direction"] == "down"]
    assert up.iloc[0]["token_id"] == 3 and up.iloc[0]["mean_diff"] == pytest.approx(1.0)
    assert up.iloc[0]["ci_low"] == pytest.approx(1.0) and up.iloc[0]["ci_high"] == pytest.approx(1.0)
    assert up.iloc[0]["count"] == (base["token_id"] == 3).sum()
    assert up.iloc[0]["mean_base"] == pytest.approx(base[base["token_id"] == 3]["entropy"].mean())
    assert down["token_id"].tolist() == [7]  # tokens with no change are in neither list
    assert up.iloc[1]["token_id"] == 5 and up.iloc[1]["mean_diff"] < 1.0  # its outlier averaged out
    assert (table["count"] >= 5).all()
    rare = changed_tokens(
        base, other, "entropy", listing=TokenChangeOptions(min_count=1000), boot=BootstrapOptions(n_boot=10)
    )
    assert rare.empty and "mean_diff" in rare.columns

    by_context = changed_tokens(
        base,
        other,
        "entropy",
        by=("context_token_id", "token_id"),
        listing=TokenChangeOptions(min_count=2, top_n=50),
        boot=BootstrapOptions(n_boot=100),
    )
    assert set(by_context[by_context["direction"] == "up"]["token_id"]) <= {3, 5}
    assert (by_context["ci_low"] <= by_context["mean_diff"] + 1e-12).all()

    with pytest.raises(TokenscopeError, match="same tokens"):
        changed_tokens(base, other.assign(token_id=other["token_id"] + 1), "entropy", boot=BootstrapOptions(n_boot=10))


def test_token_changes_of_a_pair_table_column():
    rng = np.random.default_rng(15)
    pairs = pd.DataFrame({"prompt_id": np.repeat(["a", "b", "c", "d"], 25), "token_id": np.tile(np.arange(5), 20)})
    pairs["kl_a_b"] = np.where(pairs["token_id"] == 2, 0.8, 0.1) + rng.uniform(0, 0.01, len(pairs))
    table = token_changes(pairs, "kl_a_b", listing=TokenChangeOptions(top_n=2), boot=BootstrapOptions(n_boot=200))
    assert table["direction"].tolist() == ["up", "up"]  # KL is never negative
    assert table.iloc[0]["token_id"] == 2 and table.iloc[0]["n_units"] == 4
    assert table.iloc[0]["ci_low"] <= table.iloc[0]["mean_kl_a_b"] <= table.iloc[0]["ci_high"]
