"""Generation and scoring match the seed notebook's per-position method, batched or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from reference import seed_stats
from tokenscope.model.anatomy import Unembedding, backbone, check_unembedding
from tokenscope.scoring.formulas import metrics_from_logits
from tokenscope.generation.run import run_generation
from tokenscope.scoring.teacher_forcing import run_teacher_forcing
from tokenscope.inputs.prompts import Prompt

ARCHS = ["llama", "qwen2", "gpt2"]
SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_new_tokens": 12}


def make_prompts(n: int = 4) -> list[Prompt]:
    questions = ["What is 2 + 2?", "Héllo wörld 日本語?", "Think step by step about f(x) = x^2 on [0, 2].", "Hi"]
    return [
        Prompt(
            id=f"p{i}",
            messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": questions[i % 4] * (1 + i)}),
            reference=f"<think> {questions[i % 4]} </think> The answer is \\boxed{{{i}}}. 🙂",
        )
        for i in range(n)
    ]


def assert_matches_seed(model, tokenizer, frame: pd.DataFrame, sequences: dict, tol: float = 1e-4) -> None:
    """Every row equals the seed method's value at the same position."""
    checked = 0
    for (prompt_id, sample), rows in frame.groupby(["prompt_id", "sample"]):
        ids, start = sequences[(prompt_id, sample)]
        expected = pd.DataFrame(seed_stats(model, tokenizer, ids, start))
        expected = expected.iloc[-len(rows):] if start > 0 else expected
        rows = rows.sort_values("step")
        assert len(rows) == len(expected)
        np.testing.assert_array_equal(rows["token_id"].to_numpy(), expected["next_token_id"].to_numpy())
        np.testing.assert_array_equal(rows["context_token_id"].to_numpy(), expected["current_token_id"].to_numpy())
        np.testing.assert_allclose(rows["entropy"].to_numpy(), expected["entropy"].to_numpy(), atol=tol, rtol=0)
        np.testing.assert_allclose(rows["prob"].to_numpy(), expected["probability_of_next_token"].to_numpy(), atol=tol, rtol=0)
        np.testing.assert_array_equal(rows["rank"].to_numpy(), expected["rank"].to_numpy())
        checked += len(rows)
    assert checked == len(frame) > 0


def generation_table_sequences(generations: pd.DataFrame) -> dict:
    return {
        (r.prompt_id, r.sample): (list(r.prompt_token_ids) + list(r.token_ids), len(r.prompt_token_ids))
        for r in generations.itertuples()
    }


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_metrics_match_seed_method(tiny_loaded, arch, batch_size):
    model, tokenizer = tiny_loaded(arch)
    generations, tokens = run_generation(
        model, tokenizer, make_prompts(), model_name=arch, prompt_set="t", n_samples=2, seed=7,
        sampling=SAMPLING, batch_size=batch_size, show_progress=False,
    )
    gen, tok = generations.to_pandas(), tokens.to_pandas()
    assert len(gen) == 8 and tok["step"].min() == 0
    assert (gen["n_tokens"] == gen["token_ids"].map(len)).all()
    assert set(gen["finish_reason"]) <= {"eos", "length"}
    assert_matches_seed(model, tokenizer, tok, generation_table_sequences(gen))


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_equals_unbatched(tiny_loaded, arch):
    model, tokenizer = tiny_loaded(arch)
    runs = [
        run_generation(model, tokenizer, make_prompts(), model_name=arch, prompt_set="t", n_samples=2, seed=3,
                       sampling=SAMPLING, batch_size=b, show_progress=False)
        for b in (1, 8)
    ]
    (g1, t1), (g8, t8) = [(g.to_pandas(), t.to_pandas()) for g, t in runs]
    assert g1["token_ids"].map(list).tolist() == g8["token_ids"].map(list).tolist()
    np.testing.assert_allclose(t1["entropy"], t8["entropy"], atol=1e-4)
    np.testing.assert_allclose(t1["logprob"], t8["logprob"], atol=1e-4)


def test_seeded_reruns_repeat_and_seeds_differ(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    run = lambda seed: run_generation(model, tokenizer, make_prompts(), model_name="m", prompt_set="t", n_samples=3,
                                      seed=seed, sampling=SAMPLING, batch_size=4, show_progress=False)[0].to_pandas()
    first, again, other = run(1), run(1), run(2)
    assert first["token_ids"].map(list).tolist() == again["token_ids"].map(list).tolist()
    assert first["token_ids"].map(list).tolist() != other["token_ids"].map(list).tolist()
    # samples of one prompt differ from each other
    per_prompt = first[first["prompt_id"] == "p0"]["token_ids"].map(tuple)
    assert per_prompt.nunique() > 1


def test_greedy_generation_takes_the_argmax(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    _, tokens = run_generation(model, tokenizer, make_prompts(2), model_name="m", prompt_set="t",
                               sampling={**SAMPLING, "do_sample": False}, show_progress=False)
    assert (tokens.to_pandas()["rank"] == 1).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("span", ["answer", "all"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_teacher_forcing_matches_seed_method(tiny_loaded, arch, span, batch_size):
    model, tokenizer = tiny_loaded(arch)
    prompts = make_prompts()
    frame = run_teacher_forcing(model, tokenizer, prompts, model_name=arch, prompt_set="t", span=span,
                                batch_size=batch_size, chunk_rows=5, show_progress=False).to_pandas()
    from tokenscope.inputs.sequences import reference_sequences

    sequences = {(s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start) for s in reference_sequences(tokenizer, prompts, span)}
    assert_matches_seed(model, tokenizer, frame, sequences)
    assert (frame["source"] == "reference").all()
    if span == "all":
        assert (frame.groupby("prompt_id")["position"].min() == 1).all()
        assert set(frame["segment"]) == {"prompt", "completion"}
    else:
        assert (frame["segment"] == "completion").all()
        # the answer's text is what is scored
        for prompt in prompts:
            text = "".join(frame[frame["prompt_id"] == prompt.id].sort_values("step")["token"])
            assert text.startswith(prompt.reference)


@pytest.mark.parametrize("arch", ARCHS)
def test_unembedding_reproduces_model_logits(tiny_loaded, arch):
    model, tokenizer = tiny_loaded(arch)
    unembed = Unembedding(model)
    check_unembedding(model, unembed, len(tokenizer))
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        torch.testing.assert_close(unembed(backbone(model)(input_ids=ids).last_hidden_state), model(input_ids=ids).logits.float())


def test_metrics_from_logits_against_definitions():
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    logits[0, :10] = float("-inf")  # masked vocabulary entries contribute nothing
    targets = torch.tensor([12, 3, 7, 0, 49, 20])
    m = metrics_from_logits(logits.to(torch.bfloat16).float(), targets, top_k=4)
    ref_logits = logits.to(torch.bfloat16).float()
    expected_entropy = torch.distributions.Categorical(logits=ref_logits).entropy()
    torch.testing.assert_close(m.entropy, expected_entropy, atol=1e-5, rtol=0)
    probs = torch.softmax(ref_logits, -1)
    torch.testing.assert_close(m.prob, probs[torch.arange(6), targets], atol=1e-6, rtol=1e-5)
    expected_rank = (ref_logits > ref_logits[torch.arange(6), targets][:, None]).sum(-1) + 1
    assert m.rank.tolist() == expected_rank.tolist()
    top = probs.topk(4)
    assert m.topk_ids.tolist() == top.indices.tolist()
    torch.testing.assert_close(m.topk_logprobs.exp(), top.values)


def test_token_strings_read_back_the_text(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    frame = run_teacher_forcing(model, tokenizer, prompts, model_name="m", prompt_set="t", span="all",
                                show_progress=False).to_pandas()
    for prompt in prompts:
        rows = frame[frame["prompt_id"] == prompt.id].sort_values("position")
        first = rows.iloc[0]["context_token"]
        text = first + "".join(rows["token"])
        assert text == tokenizer.decode(tokenizer.apply_chat_template(
            [*prompt.messages, {"role": "assistant", "content": prompt.reference}], tokenize=True, return_dict=False))
        assert rows["token_piece"].tolist() == tokenizer.convert_ids_to_tokens(rows["token_id"].tolist())
        assert "\ufffd" not in text  # multi-byte characters are never split into replacement chars


@pytest.mark.parametrize("arch", [*ARCHS, "qwen2-sliding"])
@pytest.mark.parametrize("batch_size", [12, 5])
def test_rows_leaving_the_batch_keep_exact_metrics(tiny_loaded, arch, batch_size):
    """Many end tokens make rows finish at different steps: with 12 slots the batch shrinks, with
    5 slots queued prompts take over finished rows' cache slots mid-generation."""
    from tokenscope.generation.decode import generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    model, tokenizer = tiny_loaded(arch)
    requests = generation_requests(tokenizer, make_prompts(), n_samples=3, seed=5)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16)
    frequent_ends = list(range(0, len(tokenizer), 25))
    batched = generate(model, tokenizer, requests, params, batch_size=batch_size, eos_ids=frequent_ends, show_progress=False)
    single = generate(model, tokenizer, requests, params, batch_size=1, eos_ids=frequent_ends, show_progress=False)
    lengths = [len(g.token_ids) for g in batched]
    assert len(set(lengths)) > 2 and min(lengths) < 16  # rows really left at different steps
    assert any(g.finish_reason == "eos" for g in batched) and any(g.finish_reason == "length" for g in batched)
    for b, s in zip(batched, single):
        assert b.token_ids.tolist() == s.token_ids.tolist()
        ids = list(b.request.prompt_ids) + b.token_ids.tolist()
        expected = pd.DataFrame(seed_stats(model, tokenizer, ids, len(b.request.prompt_ids)))
        np.testing.assert_allclose(b.entropy, expected["entropy"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(b.logprob), expected["probability_of_next_token"], atol=1e-4, rtol=0)
