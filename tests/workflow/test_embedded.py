"""The workflow end to end on the embedded SmolLM2-135M-Instruct (tests/configs/embedded.yaml)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers.paths import REPO
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake


@pytest.mark.slow
def test_embedded_workflow_end_to_end(tmp_path):
    copy_prompts(tmp_path, "smoke.jsonl", source=REPO / "config" / "prompts")
    snakemake(tmp_path, "embedded.yaml", "--cores", "2")
    results = tmp_path / "results"
    manifest = json.loads((results / "models" / "smollm2" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "embedded" and "model.safetensors" in manifest["weights"]
    generations = pd.read_parquet(results / "generations" / "smoke" / "smollm2.parquet")
    assert len(generations) == 3 * 2 and generations["text"].str.len().gt(0).all()
    tokens = pd.read_parquet(results / "tokens" / "smoke" / "smollm2" / "smollm2.parquet")
    assert len(tokens) == generations["n_tokens"].sum()
    assert tokens["entropy"].between(0, 11).all()  # log(49152) = 10.8 nats
    reference = pd.read_parquet(results / "tokens" / "smoke" / "smollm2" / "reference.parquet")
    assert set(reference["prompt_id"]) == {"add", "handshakes", "capital"}
    for view in ("generated", "reference"):
        figures = results / "figures" / "smoke" / "all" / view
        assert (figures / "entropy_hist_all.png").stat().st_size > 10_000
        assert len(list((figures / "per_prompt").glob("*.png"))) == 2 * 3
    assert planned_jobs(tmp_path, "embedded.yaml") == []
