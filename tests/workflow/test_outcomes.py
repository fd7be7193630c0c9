"""Outcome statistics end to end (tests/configs/outcomes.yaml): three tiny random checkpoints, a
prompt set with answers, three samples per prompt; the tables, per-generation statistics and
figures exist, agree with the library on the run's own tables, and are entries of the report."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tokenscope.outcomes.stats import OutcomeOptions, outcome_statistics, pass_at_k

from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow
MODELS = ["base", "step1", "step2"]
TABLES = ("accuracy", "pass_at_k", "auroc", "auroc_paired", "entropy_fit", "entropy_fit_points", "entropy_fit_curve")


@pytest.fixture(scope="module")
def outcomes_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("outcomes-workflow")
    for seed, model in enumerate(MODELS):
        save_tiny_checkpoint(workdir / "checkpoints" / model, seed=seed)
    copy_prompts(workdir, "tiny_answers.jsonl")
    snakemake(workdir, "outcomes.yaml", "--cores", "2")
    snakemake(workdir, "outcomes.yaml", "--report", "results/report.zip")
    return workdir


def test_outputs_agree_with_the_library(outcomes_run):
    results = outcomes_run / "results"
    out = results / "outcomes" / "tiny_answers" / "all"
    config = yaml.safe_load((REPO / "tests" / "configs" / "outcomes.yaml").read_text())["outcomes"]
    options = OutcomeOptions(pass_at_k=(1, 2, 3), n_boot=config["n_boot"], seed=config["seed"])
    tokens = {m: results / "tokens" / "tiny_answers" / m / f"{m}.parquet" for m in MODELS}
    generations = {m: results / "generations" / "tiny_answers" / f"{m}.parquet" for m in MODELS}
    per_generation, tables = outcome_statistics(tokens, generations, MODELS, options, prompt_set="tiny_answers")

    written = pd.read_parquet(out / "generations.parquet")
    pd.testing.assert_frame_equal(written, per_generation, check_dtype=False)
    assert len(written) == len(MODELS) * 8 * 3 and written["correct"].isna().sum() == len(MODELS) * 3
    for name in TABLES:
        csv = pd.read_csv(out / "tables" / f"{name}.csv")
        expected = tables[name].reset_index(drop=True)
        assert list(csv.columns) == list(expected.columns), name
        assert len(csv) == len(expected), name
        pd.testing.assert_frame_equal(csv, expected, check_dtype=False, rtol=1e-9, check_exact=False)
        assert (out / "tables" / f"{name}.md").exists()

    # pass@k from the generations tables' `correct` by the estimator's definition.
    pass_table = pd.read_csv(out / "tables" / "pass_at_k.csv")
    for model in MODELS:
        graded = pd.read_parquet(generations[model]).dropna(subset=["correct"])
        counts = graded.groupby("prompt_id")["correct"].agg(["count", "sum"])
        for k in (1, 2, 3):
            row = pass_table.query("model == @model and k == @k").iloc[0]
            expected = np.mean(pass_at_k(counts["count"].to_numpy(), counts["sum"].to_numpy(), k))
            assert row["estimate"] == pytest.approx(expected) and row["n_units"] == 7
    accuracy = pd.read_csv(out / "tables" / "accuracy.csv")
    assert list(accuracy["model"]) == MODELS and list(accuracy["checkpoint"]) == [0, 1, 2]
    assert ((accuracy["ci_low"] <= accuracy["estimate"]) & (accuracy["estimate"] <= accuracy["ci_high"])).all()
    fit = pd.read_csv(out / "tables" / "entropy_fit.csv")
    assert fit["descriptive"].all() and (fit["n_checkpoints"] == 3).all()
    for figure in ("outcomes", "auroc", "entropy_fit"):
        assert (out / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{figure}.svg").stat().st_size > 0
    assert (results / "benchmarks" / "outcome_stats" / "tiny_answers" / "all.tsv").exists()


def test_report_has_the_outcome_entries(outcomes_run):
    with zipfile.ZipFile(outcomes_run / "results" / "report.zip") as report:
        names = report.namelist()
    for name in ("accuracy.csv", "auroc_paired.csv", "entropy_fit.csv", "outcomes.png", "entropy_fit.png"):
        assert any(n.endswith(f"outcomes/tiny_answers/all/{name}") or n.endswith(f"/{name}") for n in names), name
    assert any("Outcomes" in n or "outcomes" in n for n in names)


def test_nothing_to_rerun(outcomes_run):
    assert planned_jobs(outcomes_run, "outcomes.yaml") == []
