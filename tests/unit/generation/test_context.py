"""Sequences must fit the model's positions: generation checks prompt + max_new_tokens, teacher
forcing and cross-scoring the full sequence, each refusing with one ConfigError naming the prompt,
its length and the limit (GPT-2 used to fail with an IndexError, rotary models ran past their
window silently). `truncate_to_context` caps each prompt's new tokens instead, and leaves the
results of prompts that fit unchanged."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tokenscope.errors import ConfigError
from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import generation_requests, run_generation
from tokenscope.inputs.sequences import ScoredSequence
from tokenscope.scoring.cross_scoring import score_pair
from tokenscope.scoring.teacher_forcing import run_teacher_forcing

from helpers.prompts import make_prompts
from helpers.tiny_models import build_tokenizer

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_new_tokens": 12}


def generate(model, tokenizer, prompts, **settings):
    """run_generation's tables of 2 samples per prompt, seed 3, SAMPLING and GenerationOptions `settings`."""
    options = GenerationOptions(n_samples=2, seed=3, sampling=SAMPLING, **settings)
    generations, tokens = run_generation(
        model, tokenizer, prompts, model_name="m", prompt_set="t", options=options, show_progress=False
    )
    return generations.to_pandas(), tokens.to_pandas()


def prompt_lengths(tokenizer, prompts) -> dict[str, int]:
    return {r.prompt_id: len(r.prompt_ids) for r in generation_requests(tokenizer, prompts, 1, 0)}


def test_max_positions_reads_the_config():
    from tokenscope.model.loading import max_positions

    assert max_positions(SimpleNamespace(max_position_embeddings=2048)) == 2048
    assert max_positions(SimpleNamespace(n_positions=1024)) == 1024
    text = SimpleNamespace(max_position_embeddings=512)
    assert max_positions(SimpleNamespace(get_text_config=lambda: text)) == 512
    assert max_positions(SimpleNamespace()) is None  # none declared: not checked
    assert max_positions(SimpleNamespace(config=SimpleNamespace(n_positions=64))) == 64  # a model


@pytest.fixture
def short_window(monkeypatch):
    """Shrink a loaded tiny model's declared window for one test (rotary models do not use it)."""

    def shrink(model, limit):
        key = "n_positions" if "n_positions" in vars(model.config) else "max_position_embeddings"
        monkeypatch.setattr(model.config, key, limit)

    return shrink


def test_generation_beyond_the_window_is_refused(tiny_loaded, short_window):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    lengths = prompt_lengths(tokenizer, prompts)
    longest = max(lengths, key=lengths.__getitem__)
    short_window(model, lengths[longest] + 11)
    with pytest.raises(ConfigError) as error:
        generate(model, tokenizer, prompts)
    message = str(error.value)
    assert f"prompt {longest!r}" in message and f"{lengths[longest]} prompt tokens" in message
    assert "max_new_tokens 12" in message and f"{lengths[longest] + 11} positions" in message
    assert "generation.truncate_to_context" in message and "\n" not in message


def gpt2_with_positions(n_positions: int):
    from transformers import AutoModelForCausalLM, GPT2Config

    tokenizer = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=n_positions,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), tokenizer


def test_gpt2_window_is_checked_not_an_index_error():
    model, tokenizer = gpt2_with_positions(60)
    prompts = make_prompts(2)
    assert max(prompt_lengths(tokenizer, prompts).values()) + 12 > 60  # the prompts fit, not their answers
    with pytest.raises(ConfigError, match=r"= 64 exceed the 60 positions of model 'm'"):
        generate(model, tokenizer, prompts)
    generations, _ = generate(model, tokenizer, prompts, truncate_to_context=True)
    assert ((generations["prompt_token_ids"].map(len) + generations["n_tokens"]) <= 60).all()


def test_truncate_to_context_caps_only_prompts_that_do_not_fit(tiny_loaded, short_window):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    lengths = prompt_lengths(tokenizer, prompts)
    reference_gen, reference_tok = generate(model, tokenizer, prompts, batch_size=3)
    limit = max(lengths.values()) + 4
    fitting = {p for p, n in lengths.items() if n + 12 <= limit}
    assert fitting and len(fitting) < len(lengths)
    short_window(model, limit)
    capped_gen, capped_tok = generate(model, tokenizer, prompts, batch_size=3, truncate_to_context=True)
    assert ((capped_gen["prompt_token_ids"].map(len) + capped_gen["n_tokens"]) <= limit).all()
    for ref_rows, got_rows in zip(reference_gen.itertuples(), capped_gen.itertuples(), strict=True):
        assert (ref_rows.prompt_id, ref_rows.sample) == (got_rows.prompt_id, got_rows.sample)
        reference = list(ref_rows.token_ids)
        budget = limit - lengths[got_rows.prompt_id]
        assert list(got_rows.token_ids) == (reference if got_rows.prompt_id in fitting else reference[:budget])
    keys = ["prompt_id", "sample", "step"]
    fit_ref = reference_tok[reference_tok["prompt_id"].isin(fitting)].sort_values(keys)
    fit_got = capped_tok[capped_tok["prompt_id"].isin(fitting)].sort_values(keys)
    # the same tokens; metrics as batch-invariant as ever (other rows now leave the batch earlier)
    np.testing.assert_allclose(fit_ref["entropy"].to_numpy(), fit_got["entropy"].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(fit_ref["logprob"].to_numpy(), fit_got["logprob"].to_numpy(), atol=1e-5, rtol=0)


def test_prompt_longer_than_the_window_is_refused_even_when_truncating(tiny_loaded, short_window):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    lengths = prompt_lengths(tokenizer, prompts)
    longest = max(lengths, key=lengths.__getitem__)
    short_window(model, lengths[longest])
    with pytest.raises(ConfigError, match=rf"prompt {longest!r}: {lengths[longest]} prompt tokens leave no room"):
        generate(model, tokenizer, prompts, truncate_to_context=True)


def test_teacher_forcing_beyond_the_window_is_refused(tiny_loaded, short_window):
    model, tokenizer = tiny_loaded("gpt2")
    prompts = make_prompts()
    short_window(model, 30)
    with pytest.raises(ConfigError) as error:
        run_teacher_forcing(model, tokenizer, prompts, model_name="m", prompt_set="t", show_progress=False)
    message = str(error.value)
    assert "prompt 'p0' with its reference answer" in message and "model 'm'" in message
    assert "30 positions" in message and "\n" not in message


def test_cross_scoring_beyond_the_window_is_refused(tiny_loaded, short_window):
    model, tokenizer = tiny_loaded("llama")
    other, _ = tiny_loaded("qwen2")
    sequences = [ScoredSequence("p0", 1, np.arange(1, 41), 30, 30)]
    short_window(other, 32)
    with pytest.raises(ConfigError) as error:
        score_pair(
            model,
            tokenizer,
            other,
            tokenizer,
            sequences,
            model_a_name="a",
            model_b_name="b",
            source="a",
            prompt_set="t",
            show_progress=False,
        )
    message = str(error.value)
    assert "prompt 'p0' sample 1" in message and "40 tokens" in message and "model 'b'" in message
    assert "32 positions" in message


# --- The config keys ----------------------------------------------------------------------------------


def validated(**sections):
    from snakemake.utils import validate

    from helpers.paths import REPO

    config = {"models": {"m": {"hub": "org/m"}}, "prompt_sets": {"p": "p.jsonl"}, **sections}
    validate(config, str(REPO / "schemas" / "config.schema.yaml"), set_default=True)
    return config


def schema_error(**sections) -> str:
    from snakemake.exceptions import WorkflowError

    from tokenscope.workflow.config import config_error_message

    with pytest.raises(WorkflowError) as error:
        validated(**sections)
    return config_error_message(error.value)


def test_truncate_to_context_is_an_opt_in_key():
    assert validated()["generation"]["truncate_to_context"] is False
    assert validated(generation={"truncate_to_context": True})["generation"]["truncate_to_context"] is True
    assert "invalid config at generation.truncate_to_context" in schema_error(generation={"truncate_to_context": 1})


def test_absurd_max_new_tokens_is_refused_by_the_schema():
    message = schema_error(generation={"sampling": {"max_new_tokens": 1e9}})
    assert message.startswith("invalid config at generation.sampling.max_new_tokens: 1000000000.0 is greater than")
    assert "invalid config at generation.sampling.max_new_tokens" in schema_error(
        generation={"sampling": {"max_new_tokens": 0}}
    )
    assert validated(generation={"sampling": {"max_new_tokens": 4096}})["generation"]["sampling"]["max_new_tokens"]
