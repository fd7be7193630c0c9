"""The embedded SmolLM2-135M-Instruct: metrics match the seed method; the workflow runs end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from test_core import assert_matches_seed, generation_table_sequences
from tokenscope.model.loading import LoadOptions
from tokenscope.model.loading import load_model
from tokenscope.inputs.sequences import reference_sequences
from tokenscope.generation.run import run_generation
from tokenscope.scoring.teacher_forcing import run_teacher_forcing
from tokenscope.inputs.prompts import load_prompt_set
from workflow_utils import REPO, copy_prompts, planned_jobs, snakemake


@pytest.fixture(scope="module")
def embedded(embedded_prepared):
    return load_model(embedded_prepared, LoadOptions(device="cpu", dtype="float32"))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_embedded_generation_matches_seed_method(embedded, batch_size):
    model, tokenizer = embedded
    prompts = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")
    generations, tokens = run_generation(
        model, tokenizer, prompts, model_name="smollm2", prompt_set="smoke", n_samples=1, seed=0,
        sampling={"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_new_tokens": 20},
        batch_size=batch_size, show_progress=False,
    )
    assert_matches_seed(model, tokenizer, tokens.to_pandas(), generation_table_sequences(generations.to_pandas()))


def test_embedded_teacher_forcing_matches_seed_method(embedded):
    model, tokenizer = embedded
    prompts = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")
    frame = run_teacher_forcing(model, tokenizer, prompts, model_name="smollm2", prompt_set="smoke",
                                batch_size=3, chunk_rows=16, show_progress=False).to_pandas()
    sequences = {(s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start) for s in reference_sequences(tokenizer, prompts)}
    assert_matches_seed(model, tokenizer, frame, sequences)
    answer = "".join(frame[frame["prompt_id"] == "add"].sort_values("step")["token"])
    assert answer.startswith(prompts[0].reference)


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
