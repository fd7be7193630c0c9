"""The per-token table's `in_answer` column: teacher forcing scores the template's closing tokens
after the answer (ChatML's `<|im_end|>` and newline) with the answer span, and marks them
in_answer=false; the answer text's own tokens are true, the prompt's false, generated tokens true."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import run_generation
from tokenscope.inputs.prompts import Prompt
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.tables import TOKEN_SCHEMA
from tokenscope.scoring.teacher_forcing import run_teacher_forcing

from helpers.prompts import make_prompts
from helpers.tiny_models import CHATML

TRIMMING_CHATML = CHATML.replace("message['content']", "message['content'] | trim")


def test_in_answer_is_the_last_column():
    assert TOKEN_SCHEMA.names[-1] == "in_answer" and TOKEN_SCHEMA.field("in_answer").type == pa.bool_()
    assert TOKEN_SCHEMA.names[-4:-1] == ["topk_ids", "topk_pieces", "topk_probs"]


def score(model, tokenizer, prompts, span):
    options = ScoringOptions(score_span=span)
    return run_teacher_forcing(
        model, tokenizer, prompts, model_name="m", prompt_set="t", options=options, show_progress=False
    ).to_pandas()


@pytest.mark.parametrize("span", ["answer", "all"])
def test_chatml_closing_tokens_are_not_the_answer(tiny_loaded, span):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    frame = score(model, tokenizer, prompts, span)
    assert frame["in_answer"].dtype == bool
    for prompt in prompts:
        rows = frame[frame["prompt_id"] == prompt.id].sort_values("position")
        inside = rows[rows["in_answer"]]
        assert "".join(inside["token"]) == prompt.reference
        assert inside["position"].diff().dropna().eq(1).all()  # one contiguous run
        after = rows[rows["position"] > inside["position"].max()]
        assert "".join(after["token"]) == "<|im_end|>\n" and not after["in_answer"].any()
        before = rows[rows["position"] < inside["position"].min()]
        assert not before["in_answer"].any()
        assert len(before) == (0 if span == "answer" else len(rows) - len(inside) - len(after))


def test_trimmed_answer_without_its_whitespace(tiny_loaded, monkeypatch):
    model, tokenizer = tiny_loaded("llama")
    monkeypatch.setattr(tokenizer, "chat_template", TRIMMING_CHATML)
    prompt = make_prompts(1)[0]
    padded = Prompt(prompt.id, prompt.messages, reference="  " + prompt.reference + "\n\n")
    rows = score(model, tokenizer, [padded], "answer").sort_values("position")
    assert "".join(rows[rows["in_answer"]]["token"]) == prompt.reference
    assert "".join(rows[~rows["in_answer"]]["token"]) == "<|im_end|>\n"


def test_without_chat_template_every_answer_token_is_in_answer(tiny_loaded, monkeypatch):
    model, tokenizer = tiny_loaded("llama")
    monkeypatch.setattr(tokenizer, "chat_template", None)
    prompts = make_prompts()
    frame = score(model, tokenizer, prompts, "answer")
    assert frame["in_answer"].all()
    for prompt in prompts:
        text = "".join(frame[frame["prompt_id"] == prompt.id].sort_values("step")["token"])
        assert text.endswith(prompt.reference) and prompt.reference in text
    everything = score(model, tokenizer, prompts, "all")
    assert (everything["in_answer"] == (everything["segment"] == "completion")).all()


def test_generated_tokens_are_all_in_answer(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 6}
    options = GenerationOptions(sampling=sampling)
    _, tokens = run_generation(
        model, tokenizer, make_prompts(2), model_name="m", prompt_set="t", options=options, show_progress=False
    )
    assert tokens.schema == TOKEN_SCHEMA
    assert np.asarray(tokens.column("in_answer")).all()


def test_embedded_tokenizer_answer_span(embedded_prepared):
    from tokenscope.inputs.prompts import load_prompt_set
    from tokenscope.inputs.sequences import reference_sequences
    from tokenscope.model.loading import load_prepared_tokenizer

    from helpers.paths import REPO

    tokenizer = load_prepared_tokenizer(embedded_prepared)
    prompts = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")
    references = {p.id: p.reference for p in prompts}
    for sequence in reference_sequences(tokenizer, prompts):
        start, end = sequence.answer_span
        assert start == sequence.score_start
        assert tokenizer.decode(sequence.token_ids[start:end]) == references[sequence.prompt_id]
        assert tokenizer.decode(sequence.token_ids[end:]) == "<|im_end|>\n"
