"""The bootstrap on per-unit summaries against the exact token-level bootstrap with the same draws.

The reference pools each resample's tokens explicitly (a unit drawn twice counts twice) and takes
np.mean / np.quantile; the implementation works on per-unit sums and histograms only. Means must
agree exactly, quantiles within the widest histogram bin they used (`ci_resolution`): one bin of
the uniform grid, (max - min) / bins, and far less on the refined grid the workflow uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tokenscope.analysis.stats import (
    BootstrapOptions,
    Tokens,
    bootstrap_summary,
    cluster_bootstrap,
    draw_blocks,
    resampled_statistics,
    statistic_quantile,
    token_tables,
)

NAMES = ("mean", "median", "p90", "p99", "p0", "p100", "p12.5")


def clustered(rng: np.random.Generator, n_units: int, sizes: tuple[int, int]) -> pd.DataFrame:
    """Entropy-like tokens: many near 0, a long right tail, a shared effect per prompt."""
    size = rng.integers(*sizes, n_units)
    unit = np.repeat(np.arange(n_units), size)
    effect = rng.normal(0, 0.4, n_units)[unit]
    peaked = rng.random(unit.size) < 0.5
    value = np.where(peaked, rng.exponential(0.02, unit.size), rng.gamma(2.0, 0.8, unit.size) * np.exp(effect))
    return pd.DataFrame({"prompt_id": [f"p{u:04d}" for u in unit], "value": value})


def exact_resampled(frame: pd.DataFrame, names, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Each statistic on each resample's pooled tokens, pooled explicitly (units in sorted order)."""
    codes, _ = pd.factorize(frame["prompt_id"], sort=True)
    values = frame["value"].to_numpy(np.float64)
    n_units = codes.max() + 1
    counts = np.concatenate(list(draw_blocks(n_units, n_boot, seed))).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    per_unit = np.split(values[order], np.cumsum(np.bincount(codes, minlength=n_units))[:-1])
    result: dict[str, list[float]] = {name: [] for name in names}
    for row in counts:
        pooled = np.concatenate([np.tile(part, k) for part, k in zip(per_unit, row, strict=True) if k])
        for name in names:
            q = statistic_quantile(name)
            result[name].append(pooled.mean() if q is None else np.quantile(pooled, q))
    return {name: np.array(v) for name, v in result.items()}


@pytest.mark.parametrize(
    "n_units, sizes, bins, ties",
    [(6, (30, 90), 4096, True), (7, (1, 9), 16, False), (40, (1, 3), 64, True), (25, (40, 80), 8, False)],
)
def test_each_resample_is_within_one_bin_of_exact_pooling(n_units, sizes, bins, ties):
    rng = np.random.default_rng(0)
    frame = clustered(rng, n_units, sizes)
    if ties:
        frame["value"] = frame["value"].round(1)
    tokens = Tokens.of(frame)
    levels = [statistic_quantile(n) for n in NAMES if n != "mean"]
    low, high = frame["value"].min(), frame["value"].max()
    summary = tokens.summary("value", [], (), levels, [(low, high, bins)])
    got, resolution = resampled_statistics(summary, NAMES, n_boot=60, seed=3)
    expected = exact_resampled(frame, NAMES, 60, 3)
    assert summary.histogram is not None and summary.histogram.shape == (n_units, bins)
    np.testing.assert_array_equal(summary.histogram.sum(axis=1), summary.counts)
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-12, atol=0)
    assert resolution["mean"] == 0.0
    for name in NAMES[1:]:
        error = np.abs(got[name] - expected[name])
        assert resolution[name] == pytest.approx((high - low) / bins)
        assert error.max() <= resolution[name] * (1 + 1e-9) + 1e-12, (name, error.max(), resolution[name])
    # the extremes are the first and last tokens: exact to the bin only
    assert (got["p0"] >= frame["value"].min() - 1e-12).all() and (got["p100"] <= frame["value"].max() + 1e-12).all()


def test_quantile_ci_error_against_the_exact_token_level_bootstrap():
    """Realistic size: 300 prompts, ~60k tokens, most near 0 (a narrow median) and a long tail.

    The CI bounds are within ci_resolution of the exact ones. On the refined grid that is below
    0.1% of the interval's width with 4096 bins, and still narrower than the interval with 64 bins,
    where one uniform bin would be wider than the median's whole interval."""
    rng = np.random.default_rng(1)
    frame = clustered(rng, 300, (100, 300))
    n_boot, seed = 200, 5
    expected = exact_resampled(frame, ("median", "p90", "p99"), n_boot, seed)
    uniform = {}
    for bins in (4096, 64):
        summary = bootstrap_summary(
            frame,
            ["value"],
            group_columns=[],
            statistics=("median", "p90", "p99"),
            boot=BootstrapOptions(n_boot=n_boot, seed=seed, bins=bins),
        ).set_index("statistic")
        uniform[bins] = (frame["value"].max() - frame["value"].min()) / bins
        for name, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99)):
            row = summary.loc[name]
            assert row["estimate"] == pytest.approx(np.quantile(frame["value"], q), rel=1e-12)  # exact
            low, high = np.quantile(expected[name], [0.025, 0.975])
            resolution = row["ci_resolution"]
            assert 0 < resolution < (0.001 if bins == 4096 else 1.0) * (high - low)
            assert resolution < uniform[bins] / 10
            assert abs(row["ci_low"] - low) <= resolution and abs(row["ci_high"] - high) <= resolution
    median_width = np.subtract(*np.quantile(expected["median"], [0.975, 0.025]))
    assert uniform[64] > median_width  # what a single uniform grid would have given


def test_constant_infinite_and_missing_values():
    frame = pd.DataFrame({"prompt_id": list("aabbcc"), "model": "m", "value": 2.5})
    got = cluster_bootstrap(frame["value"], frame["prompt_id"], ("mean", "p90"), boot=BootstrapOptions(n_boot=50))
    p90 = got["p90"]
    assert (p90.estimate, p90.ci_low, p90.ci_high, p90.ci_resolution) == (2.5, 2.5, 2.5, 0.0)
    # +inf counts in the top bin: the CI stays finite, the exact point estimate does not
    values = np.array([0.1, 0.2, 0.3, 0.4, np.inf, 0.5, 0.6, np.nan])
    got = cluster_bootstrap(values, list("aabbccdd"), ("median", "p100"), boot=BootstrapOptions(n_boot=50))
    assert got["median"].n_tokens == 7 and got["p100"].estimate == np.inf
    assert np.isfinite(got["p100"].ci_high) and 0 < got["median"].ci_resolution < 0.5 / 4096
    nothing = cluster_bootstrap([np.nan, np.nan], ["a", "b"], ("mean", "median"), boot=BootstrapOptions(n_boot=50))
    assert nothing["median"].n_units == 0 and np.isnan(nothing["median"].estimate)
    table = bootstrap_summary(
        pd.DataFrame({"model": ["x", "x", "y"], "prompt_id": ["a", "b", "a"], "v": [1.0, 2.0, np.nan]}),
        ["v"],
        group_columns=["model"],
        boot=BootstrapOptions(n_boot=50),
    ).set_index(["model", "statistic"])
    assert table.loc[("y", "p90"), "n_tokens"] == 0 and np.isnan(table.loc[("y", "p90"), "ci_low"])


def test_many_units_get_fewer_bins(monkeypatch):
    monkeypatch.setattr(token_tables, "_HISTOGRAM_CELLS", 40 * 32)
    frame = clustered(np.random.default_rng(2), 40, (20, 40))
    summary = Tokens.of(frame).quantile_summary(
        "value", [], (), ["p90"], BootstrapOptions(n_boot=40, seed=0, bins=4096)
    )
    assert summary.histogram is not None and summary.histogram.shape[1] <= 32
    got, resolution = resampled_statistics(summary, ("p90",), n_boot=40, seed=0)
    assert np.abs(got["p90"] - exact_resampled(frame, ("p90",), 40, 0)["p90"]).max() <= resolution["p90"] * (1 + 1e-9)


def test_results_depend_neither_on_row_order_nor_on_the_reader(tmp_path):
    frame = clustered(np.random.default_rng(3), 30, (20, 60)).assign(model="m")
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame.to_parquet(tmp_path / "tokens.parquet")
    tables = [
        bootstrap_summary(data, ["value"], group_columns=["model"], boot=BootstrapOptions(n_boot=200, seed=1))
        for data in (frame, shuffled, tmp_path / "tokens.parquet", [tmp_path / "tokens.parquet"])
    ]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], check_exact=False, rtol=1e-12)


def test_the_bootstrap_sees_units_not_tokens():
    """Ten times the tokens per unit: the same summary shapes (units x bins), so the same cost."""
    rng = np.random.default_rng(4)
    small, large = clustered(rng, 50, (10, 20)), clustered(rng, 50, (100, 200))
    shapes = [
        Tokens.of(f)
        .quantile_summary("value", [], (), ["median"], BootstrapOptions(n_boot=100, seed=0, bins=256))
        .histogram.shape
        for f in (small, large)
    ]
    assert [rows for rows, _ in shapes] == [50, 50] and all(256 <= bins <= 258 for _, bins in shapes)  # + gap bins
