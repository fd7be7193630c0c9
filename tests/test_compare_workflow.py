"""Checkpoint comparison end to end (tests/configs/compare.yaml): a finetune series of a tiny
Llama, cross-scoring, statistics over prompts; adding a checkpoint reruns only what includes it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import save_tiny_checkpoint
from workflow_utils import REPO, copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow
CHECKPOINTS = ["checkpoint-1-of-2", "checkpoint-2-of-2"]


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("compare-workflow")
    save_tiny_checkpoint(workdir / "checkpoints" / "base", seed=0)
    save_tiny_checkpoint(workdir / "checkpoints" / "step1", seed=1)
    copy_prompts(workdir, "tiny_a.jsonl")
    snakemake(workdir, "compare.yaml", "--cores", "2")
    return workdir


def test_finetune_series_and_pair_tables(compare_run):
    results = compare_run / "results"
    for name in CHECKPOINTS:
        assert (results / "finetune" / "base" / name / "model.safetensors").exists()
        assert (results / "models" / name / "manifest.json").exists()
    models = ["base", "step1", *CHECKPOINTS]
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for source in (a, b, "reference"):
                pairs = pd.read_parquet(results / "pairs" / "tiny_a" / a / b / f"{source}.parquet")
                assert (pairs["kl_a_b"] >= 0).all() and (pairs["kl_b_a"] >= 0).all()
                assert set(pairs["model_a"]) == {a} and set(pairs["model_b"]) == {b}
    # Pair tables on a model's own generations hold its own per-token logprobs.
    own = pd.read_parquet(results / "tokens" / "tiny_a" / "base" / "base.parquet")
    pairs = pd.read_parquet(results / "pairs" / "tiny_a" / "base" / "step1" / "base.parquet")
    merged = own.merge(pairs, on=["prompt_id", "sample", "position"])
    assert len(merged) == len(own)
    assert (merged["logprob"] - merged["logprob_a"]).abs().max() < 1e-4


def test_comparison_tables_and_figure(compare_run):
    out = compare_run / "results" / "comparison" / "tiny_a" / "all"
    trends = pd.read_csv(out / "tables" / "trends.csv")
    assert list(dict.fromkeys(trends["model"])) == ["base", "step1", *CHECKPOINTS]
    on_base = trends[trends["tokens"] == "base's generations"]
    assert {"mean_entropy", "p99_entropy", "share_above_base_p80", "high_entropy_overlap", "mean_kl_base_model"} <= set(on_base["measure"])
    assert (trends["ci_low"] <= trends["estimate"] + 1e-9).all() and (trends["estimate"] <= trends["ci_high"] + 1e-9).all()
    tests = pd.read_csv(out / "tables" / "paired_tests.csv")
    assert set(tests["model"]) == {"step1", *CHECKPOINTS} and tests["p_wilcoxon_adj"].between(0, 1).all()
    for name in CHECKPOINTS:
        changed = pd.read_csv(out / "tables" / f"changed_{name}_by_context_token.csv")
        assert {"context_token", "token", "count", "mean_change", "ci_low", "ci_high", "metric"} <= set(changed.columns)
    assert (out / "trends.png").read_bytes()[:4] == b"\x89PNG"


def test_added_checkpoint_plans_only_its_jobs(compare_run, tmp_path):
    assert planned_jobs(compare_run, "compare.yaml") == []
    save_tiny_checkpoint(compare_run / "checkpoints" / "step2", seed=2)
    config = yaml.safe_load((REPO / "tests" / "configs" / "compare.yaml").read_text())
    config["models"]["step2"] = {"path": "checkpoints/step2"}
    edited = tmp_path / "added.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(compare_run, str(edited))
    rules = {rule for rule, _ in jobs}
    assert "finetune" not in rules and {"prepare_model", "generate", "cross_score", "compare_group"} <= rules
    for rule, wildcards in jobs:
        models = {wildcards.get(k) for k in ("model", "scorer", "model_a", "model_b")} - {None}
        if models:  # every per-model job is step2's; the others are the group's aggregates
            assert "step2" in models, (rule, wildcards)
        else:
            assert rule in {"check_tokenizers", "compare_group", "summarize_group", "plot_prompt_figures",
                            "plot_entropy_hist", "all"}, (rule, wildcards)
