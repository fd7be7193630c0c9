"""Generation tables (run_generation) match the per-position reference, batched or not, on tiny
models and on the embedded model; seeded runs repeat."""

from __future__ import annotations

import numpy as np
import pytest

from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import run_generation
from tokenscope.inputs.prompts import load_prompt_set

from helpers.paths import REPO
from helpers.prompts import make_prompts
from helpers.reference import assert_matches_reference, generation_table_sequences
from helpers.tiny_models import ARCHS

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_new_tokens": 12}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_metrics_match_seed_method(tiny_loaded, arch, batch_size):
    model, tokenizer = tiny_loaded(arch)
    generations, tokens = run_generation(
        model,
        tokenizer,
        make_prompts(),
        model_name=arch,
        prompt_set="t",
        options=GenerationOptions(n_samples=2, seed=7, sampling=SAMPLING, batch_size=batch_size),
        show_progress=False,
    )
    gen, tok = generations.to_pandas(), tokens.to_pandas()
    assert len(gen) == 8 and tok["step"].min() == 0
    assert (gen["n_tokens"] == gen["token_ids"].map(len)).all()
    assert set(gen["finish_reason"]) <= {"eos", "length"}
    assert_matches_reference(model, tokenizer, tok, generation_table_sequences(gen), sampling=SAMPLING)


def test_tempered_entropy_at_the_sampler_s_temperature_matches_a_float64_reference(tiny_loaded):
    """At temperature 0.6 with top-k and top-p, the three entropies differ, and each matches its
    reference: tempered_entropy is softmax(logits / 0.6)'s over the whole vocabulary."""
    sampling = {"do_sample": True, "temperature": 0.6, "top_k": 40, "top_p": 0.9, "max_new_tokens": 10}
    model, tokenizer = tiny_loaded(ARCHS[0])
    generations, tokens = run_generation(
        model,
        tokenizer,
        make_prompts(),
        model_name="m",
        prompt_set="t",
        options=GenerationOptions(n_samples=2, seed=5, sampling=sampling, batch_size=3),
        show_progress=False,
    )
    tok = tokens.to_pandas()
    assert_matches_reference(
        model, tokenizer, tok, generation_table_sequences(generations.to_pandas()), sampling=sampling
    )
    assert (tok["tempered_entropy"] != tok["entropy"]).mean() > 0.9
    assert (tok["sampling_entropy"] <= tok["tempered_entropy"] + 1e-5).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_equals_unbatched(tiny_loaded, arch):
    model, tokenizer = tiny_loaded(arch)
    runs = [
        run_generation(
            model,
            tokenizer,
            make_prompts(),
            model_name=arch,
            prompt_set="t",
            options=GenerationOptions(n_samples=2, seed=3, sampling=SAMPLING, batch_size=b),
            show_progress=False,
        )
        for b in (1, 8)
    ]
    (g1, t1), (g8, t8) = [(g.to_pandas(), t.to_pandas()) for g, t in runs]
    assert g1["token_ids"].map(list).tolist() == g8["token_ids"].map(list).tolist()
    np.testing.assert_allclose(t1["entropy"], t8["entropy"], atol=1e-4)
    np.testing.assert_allclose(t1["logprob"], t8["logprob"], atol=1e-4)


def test_seeded_reruns_repeat_and_seeds_differ(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")

    def run(seed):
        return run_generation(
            model,
            tokenizer,
            make_prompts(),
            model_name="m",
            prompt_set="t",
            options=GenerationOptions(n_samples=3, seed=seed, sampling=SAMPLING, batch_size=4),
            show_progress=False,
        )[0].to_pandas()

    first, again, other = run(1), run(1), run(2)
    assert first["token_ids"].map(list).tolist() == again["token_ids"].map(list).tolist()
    assert first["token_ids"].map(list).tolist() != other["token_ids"].map(list).tolist()
    # samples of one prompt differ from each other
    per_prompt = first[first["prompt_id"] == "p0"]["token_ids"].map(tuple)
    assert per_prompt.nunique() > 1


def test_greedy_generation_takes_the_argmax(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    _, tokens = run_generation(
        model,
        tokenizer,
        make_prompts(2),
        model_name="m",
        prompt_set="t",
        options=GenerationOptions(sampling={**SAMPLING, "do_sample": False}),
        show_progress=False,
    )
    frame = tokens.to_pandas()
    assert (frame["rank"] == 1).all()
    assert (frame["sampling_entropy"] == 0).all()  # greedy: the distribution drawn from is one token
    assert (frame["margin"] >= 0).all() and (frame["varentropy"] >= 0).all()


# --- The embedded SmolLM2-135M-Instruct -------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3])
def test_embedded_generation_matches_seed_method(embedded, batch_size):
    model, tokenizer = embedded
    prompts = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")
    sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_new_tokens": 20}
    generations, tokens = run_generation(
        model,
        tokenizer,
        prompts,
        model_name="smollm2",
        prompt_set="smoke",
        options=GenerationOptions(n_samples=1, seed=0, sampling=sampling, batch_size=batch_size),
        show_progress=False,
    )
    assert_matches_reference(
        model, tokenizer, tokens.to_pandas(), generation_table_sequences(generations.to_pandas()), sampling=sampling
    )
