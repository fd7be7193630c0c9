"""Teacher forcing (scoring.teacher_forcing) matches the per-position reference, batched or not, on
tiny models and on the embedded model; its token strings read back the text; the scoring layout
round-trips to input order."""

from __future__ import annotations

import pytest

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import reference_sequences
from tokenscope.scoring.teacher_forcing import ScoringLayout, run_teacher_forcing

from helpers.paths import REPO
from helpers.prompts import make_prompts
from helpers.reference import assert_matches_reference
from helpers.tiny_models import ARCHS


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("span", ["answer", "all"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_teacher_forcing_matches_seed_method(tiny_loaded, arch, span, batch_size):
    model, tokenizer = tiny_loaded(arch)
    prompts = make_prompts()
    frame = run_teacher_forcing(
        model,
        tokenizer,
        prompts,
        model_name=arch,
        prompt_set="t",
        span=span,
        batch_size=batch_size,
        chunk_rows=5,
        show_progress=False,
    ).to_pandas()
    sequences = {
        (s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start)
        for s in reference_sequences(tokenizer, prompts, span)
    }
    assert_matches_reference(model, tokenizer, frame, sequences)
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


def test_token_strings_read_back_the_text(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts()
    frame = run_teacher_forcing(
        model, tokenizer, prompts, model_name="m", prompt_set="t", span="all", show_progress=False
    ).to_pandas()
    for prompt in prompts:
        rows = frame[frame["prompt_id"] == prompt.id].sort_values("position")
        first = rows.iloc[0]["context_token"]
        text = first + "".join(rows["token"])
        assert text == tokenizer.decode(
            tokenizer.apply_chat_template(
                [*prompt.messages, {"role": "assistant", "content": prompt.reference}], tokenize=True, return_dict=False
            )
        )
        assert rows["token_piece"].tolist() == tokenizer.convert_ids_to_tokens(rows["token_id"].tolist())
        assert "\ufffd" not in text  # multi-byte characters are never split into replacement chars


def test_embedded_teacher_forcing_matches_seed_method(embedded):
    model, tokenizer = embedded
    prompts = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")
    frame = run_teacher_forcing(
        model,
        tokenizer,
        prompts,
        model_name="smollm2",
        prompt_set="smoke",
        batch_size=3,
        chunk_rows=16,
        show_progress=False,
    ).to_pandas()
    sequences = {
        (s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start) for s in reference_sequences(tokenizer, prompts)
    }
    assert_matches_reference(model, tokenizer, frame, sequences)
    answer = "".join(frame[frame["prompt_id"] == "add"].sort_values("step")["token"])
    assert answer.startswith(prompts[0].reference)


def test_layout_input_order_round_trips():
    sequences = [[0] * n for n in (3, 8, 5, 8, 1, 6)]
    starts = [1, 2, 5, 7, 1, 3]
    layout = ScoringLayout.build(sequences, starts, batch_size=4)
    # tag each scored token in batch order with (sequence, position); input order must be sorted
    tags = [
        (int(b.rows[r]), int(p))
        for b in layout.iter_batches(sequences, 0)
        for r, p in zip(b.batch_row, b.position, strict=True)
    ]
    reordered = [tags[i] for i in layout.input_order().tolist()]
    assert reordered == [
        (i, p) for i, (s, st) in enumerate(zip(sequences, starts, strict=True)) for p in range(st, len(s))
    ]
    with pytest.raises(ValueError, match="score_starts"):
        ScoringLayout.build(sequences, [0, 1, 1, 1, 1, 1], batch_size=2)
