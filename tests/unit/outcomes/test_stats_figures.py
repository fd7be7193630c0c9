"""The outcome figures (tokenscope.figures.outcomes) draw the tables of outcome_statistics and save
as PNG and SVG; few checkpoints are labelled descriptive."""

from __future__ import annotations

import pandas as pd

from tokenscope.figures.outcomes import fit_label, plot_auroc, plot_entropy_fit, plot_outcomes
from tokenscope.figures.style import save_figure
from tokenscope.outcomes.stats import OutcomeOptions, outcome_statistics

from helpers.outcomes import synthetic_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_draw_and_save(tmp_path):
    models = ("base", "c1", "c2")
    tokens, generations = synthetic_run(tmp_path, models=models)
    _, tables = outcome_statistics(
        tokens, generations, list(models), OutcomeOptions(pass_at_k=(1, 2, 3), n_boot=200), prompt_set="s"
    )
    figures = {
        "outcomes": plot_outcomes(tables["accuracy"], tables["pass_at_k"], "s, group all"),
        "auroc": plot_auroc(tables["auroc"], tables["auroc_paired"], "s, group all"),
        "entropy_fit": plot_entropy_fit(
            tables["entropy_fit_points"], tables["entropy_fit"], tables["entropy_fit_curve"], "s, group all"
        ),
    }
    for name, fig in figures.items():
        png, svg = save_figure(fig, tmp_path / f"{name}.png", "svg")
        assert png.read_bytes()[:8] == PNG_MAGIC and svg.stat().st_size > 0
    assert "descriptive only: 3 checkpoints (< 5)" in fit_label(tables["entropy_fit"])


def test_one_model_draws_without_fit(tmp_path):
    tokens, generations = synthetic_run(tmp_path, models=("base",))
    _, tables = outcome_statistics(tokens, generations, ["base"], OutcomeOptions(n_boot=100), prompt_set="s")
    assert tables["auroc_paired"].empty and tables["entropy_fit_curve"].empty
    assert fit_label(tables["entropy_fit"]).startswith("no fit")
    fig = plot_entropy_fit(tables["entropy_fit_points"], tables["entropy_fit"], tables["entropy_fit_curve"], "t")
    save_figure(fig, tmp_path / "fit.png")
    save_figure(plot_auroc(tables["auroc"], tables["auroc_paired"], "t"), tmp_path / "auroc.png")
    assert isinstance(tables["accuracy"], pd.DataFrame)
