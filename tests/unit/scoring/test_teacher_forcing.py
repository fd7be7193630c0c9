"""Teacher forcing (scoring.teacher_forcing) matches the per-position reference, batched or not, on
tiny models and on the embedded model; its token strings read back the text; the scoring layout
round-trips to input order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from tokenscope.errors import ConfigError
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import reference_sequences, sequence_chunks
from tokenscope.scoring import teacher_forcing
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.tables import TOKEN_SCHEMA
from tokenscope.scoring.teacher_forcing import ScoringLayout, run_teacher_forcing, write_teacher_forcing

from helpers.paths import REPO
from helpers.prompts import make_prompts
from helpers.reference import assert_matches_reference
from helpers.rule_jobs import JobParams, validated_config
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
        options=ScoringOptions(score_span=span, batch_size=batch_size, chunk_rows=5),
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
    options = ScoringOptions(score_span="all")
    frame = run_teacher_forcing(
        model, tokenizer, prompts, model_name="m", prompt_set="t", options=options, show_progress=False
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
        options=ScoringOptions(batch_size=3, chunk_rows=16),
        show_progress=False,
    ).to_pandas()
    sequences = {
        (s.prompt_id, s.sample): (s.token_ids.tolist(), s.score_start) for s in reference_sequences(tokenizer, prompts)
    }
    assert_matches_reference(model, tokenizer, frame, sequences)
    answer = "".join(frame[frame["prompt_id"] == "add"].sort_values("step")["token"])
    assert answer.startswith(prompts[0].reference)


TEACHER_FORCING = {
    "model_name": "m",
    "prompt_set": "t",
    "options": ScoringOptions(batch_size=2, chunk_rows=5),
    "show_progress": False,
}


def test_write_teacher_forcing_streams_the_rows_of_run_teacher_forcing_chunk_by_chunk(tiny_loaded, tmp_path):
    """Chunks of about 120 token ids (one to three sequences each, one row group each) give
    run_teacher_forcing's table: the same keys, ids and strings in the same order, floats within
    fp32 noise of other batches, the schema and its metadata."""
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts(9)
    scoring = replace(TEACHER_FORCING["options"], n_alternatives=3, score_span="all")
    options = {**TEACHER_FORCING, "options": scoring}
    whole = run_teacher_forcing(model, tokenizer, prompts, **options)
    path = tmp_path / "reference.parquet"
    rows = write_teacher_forcing(model, tokenizer, prompts, path, chunk_tokens=120, **options)
    written = pq.read_table(path)
    assert rows == written.num_rows == whole.num_rows
    assert written.schema == TOKEN_SCHEMA and written.schema.metadata == TOKEN_SCHEMA.metadata
    chunks = list(sequence_chunks(reference_sequences(tokenizer, prompts, "all"), 120))
    assert pq.ParquetFile(path).metadata.num_row_groups == len(chunks) > 3
    got, expected = written.to_pandas(), whole.to_pandas()
    floats = ["entropy", "logprob", "prob", "varentropy", "margin", "topk_probs"]
    for column in set(got.columns) - set(floats):
        assert got[column].astype(str).tolist() == expected[column].astype(str).tolist(), column
    for column in floats[:-1]:
        np.testing.assert_allclose(got[column], expected[column], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.stack(got["topk_probs"]), np.stack(expected["topk_probs"]), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.parquet"]  # no temporary file left
    # prompts without a reference (a shard of a set that has them elsewhere): an empty table
    empty = tmp_path / "empty.parquet"
    unanswered = [replace(prompt, reference=None) for prompt in prompts]
    assert write_teacher_forcing(model, tokenizer, unanswered, empty, **options) == 0
    schema = pq.read_schema(empty)  # == ignores metadata (and the list fields' names parquet renames)
    assert pq.read_table(empty).num_rows == 0 and schema == TOKEN_SCHEMA and schema.metadata == TOKEN_SCHEMA.metadata


def test_write_teacher_forcing_leaves_no_file_when_interrupted_or_refused(tiny_loaded, tmp_path, monkeypatch):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts(9)
    score = teacher_forcing.score_token_sequences
    calls = []

    def interrupted_after_one_chunk(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(teacher_forcing, "score_token_sequences", interrupted_after_one_chunk)
    path = tmp_path / "reference.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_teacher_forcing(model, tokenizer, prompts, path, chunk_tokens=120, **TEACHER_FORCING)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
    # a sequence beyond the model's positions is refused before any chunk is scored
    calls.clear()
    monkeypatch.setattr(model.config, "max_position_embeddings", 30)
    with pytest.raises(ConfigError, match="prompt 'p0' with its reference answer"):
        write_teacher_forcing(model, tokenizer, prompts, path, chunk_tokens=120, **TEACHER_FORCING)
    assert calls == [] and list(tmp_path.iterdir()) == []


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


def test_rule_script_writes_a_shard_without_references_without_loading_a_model(tmp_path):
    """scripts/teacher_force.py on a shard whose prompts have no reference: the empty table with its
    schema, and no model loaded (the manifest it names does not exist, so loading would fail)."""
    import json
    import logging
    import runpy
    from types import SimpleNamespace

    from tokenscope.workflow.shards import file_shards

    from helpers.paths import REPO

    prompts = tmp_path / "prompts.jsonl"
    records = [{"id": p.id, "messages": list(p.messages)} for p in make_prompts(3)]
    records[2]["reference"] = "answered outside the shard"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    shard = file_shards(prompts, shard_size=2)[0]
    out = tmp_path / "reference.parquet"
    job = SimpleNamespace(
        scriptdir=str(REPO / "scripts"),
        rule="teacher_force",
        log=[],
        threads=1,
        input=SimpleNamespace(manifest=str(tmp_path / "missing" / "manifest.json"), prompts=str(prompts)),
        output=SimpleNamespace(tokens=str(out)),
        wildcards=SimpleNamespace(model="m", prompt_set="t", shard=shard.name),
        params=JobParams(
            shard=shard.params(),
            insertion=None,
            runtime={"device": "cpu", "dtype": "float32", "device_map": None},
            score_span="answer",
            n_alternatives=3,
        ),
        config=validated_config(scoring={"batch_size": 2, "chunk_rows": 8}),
    )
    handlers = logging.getLogger().handlers[:]
    try:
        runpy.run_path(str(REPO / "scripts" / "teacher_force.py"), init_globals={"snakemake": job})
    finally:
        logging.getLogger().handlers[:] = handlers
    table = pq.read_table(out)
    assert (shard.start, shard.stop) == (0, 2)
    assert table.num_rows == 0 and table.schema == TOKEN_SCHEMA and table.schema.metadata == TOKEN_SCHEMA.metadata
