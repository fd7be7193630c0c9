"""The entropy-performance fit R = -a exp(H) + b (tokenscope.outcomes.fit) recovers known parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tokenscope.outcomes.fit import (
    DESCRIPTIVE_BELOW,
    fit_entropy_performance,
    fit_table,
    resampled_fits,
)


def test_exact_points_recover_parameters():
    entropy = np.array([0.2, 0.5, 0.9, 1.3, 1.6, 2.0])
    fit = fit_entropy_performance(entropy, -0.15 * np.exp(entropy) + 1.05)
    assert fit.a == pytest.approx(0.15, rel=1e-10) and fit.b == pytest.approx(1.05, rel=1e-10)
    assert fit.r_squared == pytest.approx(1.0) and fit.rmse == pytest.approx(0.0, abs=1e-12)
    assert fit.n_points == 6 and not fit.descriptive


def test_noisy_points_recover_parameters_within_noise():
    rng = np.random.default_rng(0)
    entropy = rng.uniform(0.1, 2.0, size=400)
    performance = -0.2 * np.exp(entropy) + 1.1 + rng.normal(0, 0.01, size=entropy.size)
    fit = fit_entropy_performance(entropy, performance)
    assert fit.a == pytest.approx(0.2, abs=0.005) and fit.b == pytest.approx(1.1, abs=0.01)
    assert fit.rmse == pytest.approx(0.01, rel=0.15)


def test_few_points():
    two = fit_entropy_performance(np.array([0.5, 1.0]), np.array([0.6, 0.4]))
    assert two.descriptive and two.n_points == 2
    np.testing.assert_allclose(two.predict(np.array([0.5, 1.0])), [0.6, 0.4])  # interpolates exactly
    one = fit_entropy_performance(np.array([0.5, np.nan]), np.array([0.6, 0.4]))
    assert np.isnan(one.a) and np.isnan(one.b) and one.n_points == 1
    flat = fit_entropy_performance(np.array([0.7, 0.7, 0.7]), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(flat.a)  # no spread in H
    assert DESCRIPTIVE_BELOW == 5 and fit_entropy_performance(np.arange(4.0), np.arange(4.0)).descriptive


def test_resampled_fits_equal_row_by_row_fits():
    rng = np.random.default_rng(1)
    entropy = rng.uniform(0, 2, size=(30, 4))
    performance = rng.uniform(0, 1, size=(30, 4))
    entropy[3, 1] = np.nan
    fits = resampled_fits(entropy, performance)
    for row in range(30):
        fit = fit_entropy_performance(entropy[row], performance[row])
        assert fits["a"][row] == pytest.approx(fit.a) and fits["b"][row] == pytest.approx(fit.b)


def test_fit_table_points_and_curve():
    entropy = np.array([1.2, 0.9, 0.7, 0.6])
    accuracy = pd.DataFrame(
        {
            "checkpoint": range(4),
            "model": ["base", "c1", "c2", "c3"],
            "estimate": [0.2, 0.4, 0.55, 0.58],
            "ci_low": [0.1, 0.3, 0.45, 0.5],
            "ci_high": [0.3, 0.5, 0.65, 0.7],
            "mean_entropy": entropy,
            "entropy_ci_low": entropy - 0.05,
            "entropy_ci_high": entropy + 0.05,
        }
    )
    fit = fit_entropy_performance(entropy, accuracy["estimate"].to_numpy())
    rng = np.random.default_rng(2)
    boot = {"a": fit.a + rng.normal(0, 0.01, 500), "b": fit.b + rng.normal(0, 0.01, 500)}
    tables = fit_table(fit, boot, accuracy, ci=0.95, n_units=40)
    params = tables["entropy_fit"].set_index("parameter")
    assert params.loc["a", "estimate"] == fit.a and params.loc["a", "ci_low"] < fit.a < params.loc["a", "ci_high"]
    assert params["descriptive"].all() and (params["n_checkpoints"] == 4).all()
    points = tables["entropy_fit_points"]
    np.testing.assert_allclose(points["residual"], points["accuracy"] - (-fit.a * np.exp(entropy) + fit.b))
    assert abs(points["residual"].sum()) < 1e-9  # least squares with an intercept
    curve = tables["entropy_fit_curve"]
    assert len(curve) == 50 and (curve["ci_low"] <= curve["fitted"] + 1e-9).all()
    assert curve["entropy"].min() < entropy.min() and curve["entropy"].max() > entropy.max()
