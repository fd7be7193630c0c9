"""`top_k` is the sampling cut-off (generation.sampling.top_k); the number of alternatives recorded
per token is `n_alternatives` (config scoring.n_alternatives, function argument n_alternatives).
The old names still work with a warning; both given and different is an error naming both."""

from __future__ import annotations

import json
import logging
import runpy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tokenscope.errors import ConfigError
from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import run_generation
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.scoring.options import ScoringOptions, TokenscopeDeprecationWarning, normalize_scoring_config
from tokenscope.scoring.teacher_forcing import run_teacher_forcing
from tokenscope.workflow.shards import file_shards

from helpers.paths import REPO
from helpers.prompts import make_prompts
from helpers.rule_jobs import JobParams, validated_config

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 2, "top_p": 1.0, "max_new_tokens": 5}


def n_alternatives_of(scoring: dict) -> int:
    """ScoringOptions' n_alternatives of a config whose scoring section is `scoring`."""
    return ScoringOptions.from_config(validated_config(scoring=scoring)).n_alternatives


def test_config_key_and_its_deprecated_name():
    assert n_alternatives_of({}) == 5
    assert n_alternatives_of({"n_alternatives": 3}) == 3
    with pytest.warns(TokenscopeDeprecationWarning, match=r"scoring.top_k is deprecated: use scoring.n_alternatives"):
        assert n_alternatives_of({"top_k": 7}) == 7
    with pytest.warns(FutureWarning):  # shown by default, unlike DeprecationWarning
        assert n_alternatives_of({"top_k": 3, "n_alternatives": 3}) == 3
    with pytest.raises(ConfigError, match=r"scoring.top_k \(7\) and scoring.n_alternatives \(3\) disagree"):
        n_alternatives_of({"top_k": 7, "n_alternatives": 3})


def test_planning_maps_the_old_key():
    scoring = {"top_k": 7, "batch_size": 8}
    with pytest.warns(TokenscopeDeprecationWarning):
        normalize_scoring_config(scoring)
    assert scoring == {"batch_size": 8, "n_alternatives": 7}
    assert normalize_scoring_config({"batch_size": 8}) == {"batch_size": 8, "n_alternatives": 5}


def test_schema_accepts_both_keys_without_a_default():
    from snakemake.utils import validate

    schema = str(REPO / "schemas" / "config.schema.yaml")
    for scoring in ({"n_alternatives": 3}, {"top_k": 3}, {"top_k": 3, "n_alternatives": 3}):
        config = {"models": {"m": {"hub": "org/m"}}, "prompt_sets": {"p": "p.jsonl"}, "scoring": dict(scoring)}
        validate(config, schema, set_default=True)
        assert {k: config["scoring"].get(k) for k in scoring} == scoring
        assert "top_k" in config["scoring"] or "top_k" not in scoring  # no default fills the other in
    config = {"models": {"m": {"hub": "org/m"}}, "prompt_sets": {"p": "p.jsonl"}}
    validate(config, schema, set_default=True)
    assert "top_k" not in config["scoring"] and ScoringOptions.from_config(config).n_alternatives == 5


def topk_width(table) -> set[int]:
    return set(table.column("topk_ids").to_pandas().map(len))


def test_functions_take_n_alternatives(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts(2)
    options = {"model_name": "m", "prompt_set": "t", "options": GenerationOptions(sampling=SAMPLING)}
    three = ScoringOptions(n_alternatives=3)
    generations, tokens = run_generation(model, tokenizer, prompts, scoring=three, show_progress=False, **options)
    assert topk_width(tokens) == {3}
    with pytest.warns(TokenscopeDeprecationWarning, match=r"run_generation\(top_k=...\) is deprecated"):
        old_generations, old_tokens = run_generation(model, tokenizer, prompts, top_k=3, show_progress=False, **options)
    assert old_tokens.equals(tokens) and old_generations.equals(generations)
    with pytest.raises(TypeError, match="n_alternatives"):
        run_generation(model, tokenizer, prompts, scoring=three, top_k=4, **options)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_alternatives'"):
        run_generation(model, tokenizer, prompts, n_alternatives=3, **options)
    two = ScoringOptions(n_alternatives=2)
    scored = run_teacher_forcing(model, tokenizer, prompts, model_name="m", prompt_set="t", options=two)
    assert topk_width(scored) == {2}
    with pytest.warns(TokenscopeDeprecationWarning, match=r"run_teacher_forcing\(top_k=...\)"):
        old = run_teacher_forcing(model, tokenizer, prompts, model_name="m", prompt_set="t", top_k=2)
    assert old.equals(scored)


@pytest.fixture
def rule_job(tiny_prepared, tmp_path):
    """Run a rule script as Snakemake would, with a stand-in `snakemake` object."""
    prompts = tmp_path / "prompts.jsonl"
    records = [{"id": p.id, "messages": list(p.messages), "reference": p.reference} for p in make_prompts(2)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert len(load_prompt_set(prompts)) == 2
    (shard,) = file_shards(prompts, shard_size=2)
    shard_digest = shard.sha256

    def run(script: str, n_alternatives: int, **outputs):
        job = SimpleNamespace(
            scriptdir=str(REPO / "scripts"),
            rule=script,
            log=[],
            threads=torch.get_num_threads(),
            input=SimpleNamespace(manifest=str(tiny_prepared("llama") / "manifest.json"), prompts=str(prompts)),
            output=SimpleNamespace(**{k: str(tmp_path / v) for k, v in outputs.items()}),
            wildcards=SimpleNamespace(model="m", prompt_set="t"),
            params=JobParams(
                insertion=None,
                runtime={"device": "cpu", "dtype": "float32", "device_map": None},
                shard={"start": 0, "stop": 2, "sha256": shard_digest},
                generation={"n_samples": 1, "seed": 0, "sampling": SAMPLING, "truncate_to_context": False},
                score_span="answer",
                n_alternatives=n_alternatives,
            ),
            # speed and memory knobs: read from the config, not params
            config=validated_config(generation={"batch_size": 2}, scoring={"batch_size": 2, "chunk_rows": 8}),
        )
        handlers = logging.getLogger().handlers[:]
        try:
            runpy.run_path(str(REPO / "scripts" / f"{script}.py"), init_globals={"snakemake": job})
        finally:
            logging.getLogger().handlers[:] = handlers
        return {k: pd.read_parquet(tmp_path / v) for k, v in outputs.items()}

    return run


def test_rule_scripts_record_n_alternatives(rule_job):
    """The rules pass scoring.n_alternatives (planning maps the deprecated scoring.top_k to it)."""
    generated = rule_job("generate", 3, tokens="tokens.parquet", generations="generations.parquet")
    forced = rule_job("teacher_force", 3, tokens="reference.parquet")
    assert set(generated["tokens"]["topk_ids"].map(len)) == {3}
    assert set(forced["tokens"]["topk_ids"].map(len)) == {3}
    assert np.asarray(forced["tokens"]["in_answer"]).any()
