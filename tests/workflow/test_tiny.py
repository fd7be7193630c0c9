"""The workflow end to end on tiny random checkpoints (tests/configs/tiny.yaml): outputs, caching, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file, save_file

from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A complete run of tests/configs/tiny.yaml."""
    workdir = tmp_path_factory.mktemp("tiny-workflow")
    save_tiny_checkpoint(workdir / "checkpoints" / "base", seed=0)
    save_tiny_checkpoint(workdir / "checkpoints" / "finetune", seed=1)
    copy_prompts(workdir, "tiny_a.jsonl", "tiny_b.jsonl")
    snakemake(workdir, "tiny.yaml", "--cores", "2")
    return workdir


def test_outputs_are_complete(tiny_run):
    results = tiny_run / "results"
    for model in ("base", "finetune"):
        manifest = json.loads((results / "models" / model / "manifest.json").read_text())
        assert manifest["source"]["kind"] == "path" and manifest["weights"]
        generations = pd.read_parquet(results / "generations" / "tiny_a" / f"{model}.parquet")
        assert len(generations) == 3 * 2  # prompts x samples
        tokens = pq.read_table(results / "tokens" / "tiny_a" / model / f"{model}.parquet")
        assert tokens.schema.metadata[b"tokenscope_table"] == b"tokens"
        assert tokens.num_rows == generations["n_tokens"].sum()
        reference = pd.read_parquet(results / "tokens" / "tiny_a" / model / "reference.parquet")
        assert set(reference["prompt_id"]) == {"add", "fox"}  # the prompt without a reference is skipped
        analysis = results / "analysis" / "tiny_a" / model / model
        for name in ("describe.csv", "qcut_bins.md", "qcut_samples.csv", "by_context_token.md", "by_token.csv"):
            assert (analysis / name).stat().st_size > 0
    # tiny_b has no references: no teacher forcing there
    assert not (results / "tokens" / "tiny_b" / "base" / "reference.parquet").exists()
    figures = results / "figures" / "tiny_a" / "all" / "generated"
    assert (figures / "entropy_hist_all.png").read_bytes()[:4] == b"\x89PNG"
    assert (figures / "entropy_hist_all.svg").exists()
    per_prompt = sorted(p.name for p in (figures / "per_prompt").iterdir())
    assert {"entropy_steps-add.png", "entropy_hist-fox.svg", "entropy_steps-area.png"} <= set(per_prompt)
    summary = pd.read_csv(results / "summary" / "tiny_a" / "all" / "reference" / "describe.csv")
    assert set(summary["model"]) == {"base", "finetune"}
    for log in (tiny_run / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log


def test_complete_run_plans_nothing(tiny_run):
    assert planned_jobs(tiny_run, "tiny.yaml") == []


def test_new_weights_rerun_only_that_model(tiny_run):
    weights = tiny_run / "checkpoints" / "finetune" / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] * 1.01
    time.sleep(1)
    save_file(tensors, weights, metadata={"format": "pt"})
    jobs = planned_jobs(tiny_run, "tiny.yaml")
    per_model = {(rule, w.get("model")) for rule, w in jobs}
    assert ("prepare_model", "finetune") in per_model
    assert ("generate_shard", "finetune") in per_model and ("teacher_force", "finetune") in per_model
    # base's own jobs stay, except its token view: its pages carry the KL against finetune, rescored.
    assert not any(model == "base" for rule, model in per_model if rule != "token_view")
    rules = {rule for rule, _ in jobs}
    # the aggregates that include the finetune are planned too
    assert {
        "check_tokenizers",
        "summarize_group",
        "plot_prompt_figures",
        "plot_entropy_hist",
        "cross_score",
        "run_record",
    } <= rules


def test_edited_prompt_set_reruns_only_its_jobs(tiny_run):
    snakemake(tiny_run, "tiny.yaml", "--cores", "2")  # catch up after the previous test's change
    path = tiny_run / "prompts" / "tiny_b.jsonl"
    time.sleep(1)
    path.write_text(path.read_text() + '{"id": "b3", "messages": [{"role": "user", "content": "One more?"}]}\n')
    jobs = planned_jobs(tiny_run, "tiny.yaml")
    assert jobs and {w.get("prompt_set") for _, w in jobs if _ != "all"} == {"tiny_b"}
    assert "prepare_model" not in {rule for rule, _ in jobs}


def test_different_tokenizers_are_refused(tmp_path):
    save_tiny_checkpoint(tmp_path / "checkpoints" / "base")
    save_tiny_checkpoint(tmp_path / "checkpoints" / "other_tokenizer", vocab_size=300)
    copy_prompts(tmp_path, "tiny_b.jsonl")
    result = snakemake(tmp_path, "mismatch.yaml", "--cores", "2", check=False)
    assert result.returncode != 0
    # Whichever job meets the mismatch first (check_tokenizers, or cross_score of the pair) fails
    # with one line naming both models, shown by --show-failed-logs.
    shown = result.stdout + result.stderr
    assert "tokenscope error in rule" in shown
    assert "models 'base' and 'other' have different tokenizers" in shown
    logs = [p.read_text() for p in (tmp_path / "logs").rglob("*.log")]
    failed = [log for log in logs if "have different tokenizers" in log]
    assert failed and not any("Traceback" in log for log in failed)
