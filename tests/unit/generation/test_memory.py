"""Bounded generation memory: the KV cache holds width + steps columns (plus a small margin), a
sliding-window layer only its window (plus a slack), and the cache makes room for joining prompts
by dropping leading columns no row needs, without changing any token or metric; write_generation
streams the rows of run_generation to its files in chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tokenscope.generation import kv_cache
from tokenscope.generation.decode import DecodeOptions, cache_margin, generate
from tokenscope.generation.kv_cache import window_slack
from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import generation_requests, run_generation, write_generation
from tokenscope.generation.sampling import SamplingParams
from tokenscope.scoring.tables import GENERATION_SCHEMA, TOKEN_SCHEMA

from helpers.prompts import make_prompts
from helpers.reference import per_position_reference
from helpers.tiny_models import ARCHS

STEPS = 40
PARAMS = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=STEPS)


@pytest.fixture
def cache_log(monkeypatch):
    """Every preallocated cache layer made (its prompt width, buffer columns and window) and every
    compaction (shift)."""
    made: list[tuple[int, int, int | None]] = []
    shifts: list[int] = []
    init, drop = kv_cache.PreallocatedLayer.__init__, kv_cache.PreallocatedLayer.drop_leading

    def logged_init(self, key_buffer, value_buffer, length, window=None, held_from=0):
        made.append((length, key_buffer.shape[2], window))  # a new cache is filled up to its prompts' width
        init(self, key_buffer, value_buffer, length, window, held_from)

    def logged_drop(self, shift):
        shifts.append(shift)
        drop(self, shift)

    monkeypatch.setattr(kv_cache.PreallocatedLayer, "__init__", logged_init)
    monkeypatch.setattr(kv_cache.PreallocatedLayer, "drop_leading", logged_drop)
    return made, shifts


def mixed_length_run(model, tokenizer, batch_size: int):
    """Long budgets, and end tokens frequent enough that many rows stop after a few tokens while
    others run to the budget: slots free up while old rows still hold the first cache columns."""
    requests = generation_requests(tokenizer, make_prompts(8), n_samples=4, seed=11)
    ends = tuple(range(0, len(tokenizer), 60))
    return generate(
        model, tokenizer, requests, PARAMS, DecodeOptions(batch_size=batch_size, eos_ids=ends, show_progress=False)
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_refill_with_compaction_keeps_exact_tokens_and_metrics(tiny_loaded, arch, cache_log):
    model, tokenizer = tiny_loaded(arch)
    made, shifts = cache_log
    batched = mixed_length_run(model, tokenizer, batch_size=3)
    assert shifts, "the run never compacted its cache"
    single = mixed_length_run(model, tokenizer, batch_size=1)
    lengths = [len(g.token_ids) for g in batched]
    assert min(lengths) < 10 and max(lengths) == STEPS  # short rows left while long ones held old columns
    assert {g.finish_reason for g in batched} == {"eos", "length"}
    for b, s in zip(batched, single, strict=True):
        assert b.request == s.request
        assert b.token_ids.tolist() == s.token_ids.tolist() and b.finish_reason == s.finish_reason
        np.testing.assert_allclose(b.entropy, s.entropy, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b.logprob, s.logprob, atol=1e-5, rtol=0)
        assert b.rank.tolist() == s.rank.tolist()
    for b in batched[::3]:  # and both equal a plain forward pass over the whole sequence
        ids = list(b.request.prompt_ids) + b.token_ids.tolist()
        expected = pd.DataFrame(per_position_reference(model, tokenizer, ids, len(b.request.prompt_ids)))
        np.testing.assert_allclose(b.entropy, expected["entropy"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(b.logprob), expected["probability_of_next_token"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_cache_never_exceeds_width_plus_steps(tiny_loaded, cache_log, batch_size):
    model, tokenizer = tiny_loaded("llama")
    made, shifts = cache_log
    mixed_length_run(model, tokenizer, batch_size=batch_size)
    assert made
    for width, columns, _ in made:
        assert columns == width + STEPS - 1 + cache_margin(width, STEPS)
        assert columns <= width + STEPS + (width + STEPS) // 16 < width + 2 * STEPS
    # each compaction drops more than the margin, so compactions are rare
    assert all(shift > cache_margin(min(w for w, _, _ in made), STEPS) for shift in shifts)


def test_sliding_window_models_decode_batched_holding_only_their_window(tiny_loaded, cache_log):
    """Sliding-window layers share the cache's refill and compaction, and each holds only its
    window + window_slack columns, fewer than every prompt + its answer (more layouts in
    test_sliding_window.py)."""
    model, tokenizer = tiny_loaded("qwen2-sliding")
    made, shifts = cache_log
    batched = mixed_length_run(model, tokenizer, batch_size=4)
    assert made and shifts and {window for _, _, window in made} == {24}
    assert all(columns == 24 + window_slack(24) < w + STEPS for w, columns, _ in made)
    single = mixed_length_run(model, tokenizer, batch_size=1)
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids.tolist() == s.token_ids.tolist()
        np.testing.assert_allclose(b.entropy, s.entropy, atol=1e-5, rtol=0)


SAMPLING = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_new_tokens": 12}


def test_write_generation_streams_the_rows_of_run_generation(tiny_loaded, tmp_path, monkeypatch):
    import tokenscope.generation.run as run

    model, tokenizer = tiny_loaded("llama")
    options = dict(
        model_name="m",
        prompt_set="t",
        options=GenerationOptions(n_samples=3, seed=2, sampling=SAMPLING, batch_size=4),
        show_progress=False,
    )
    generations, tokens = run_generation(model, tokenizer, make_prompts(), **options)
    monkeypatch.setattr(run, "WRITE_CHUNK_ROWS", 30)  # several chunks: written as rows finish
    paths = {"generations_path": tmp_path / "g.parquet", "tokens_path": tmp_path / "t.parquet"}
    n = write_generation(model, tokenizer, make_prompts(), **paths, **options)
    assert n == generations.num_rows == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.parquet", "t.parquet"]  # no temporary file left
    written_gen, written_tok = pq.read_table(paths["generations_path"]), pq.read_table(paths["tokens_path"])
    assert written_gen.schema == GENERATION_SCHEMA and written_tok.schema == TOKEN_SCHEMA
    assert written_gen.schema.metadata == GENERATION_SCHEMA.metadata
    assert written_tok.schema.metadata == TOKEN_SCHEMA.metadata
    assert pq.ParquetFile(paths["tokens_path"]).metadata.num_row_groups > 1
    # the same rows: sequences in finishing order, each sequence's tokens together and in step order
    order = list(zip(written_gen["prompt_id"].to_pylist(), written_gen["sample"].to_pylist(), strict=True))
    frame = written_tok.to_pandas()
    runs = frame[["prompt_id", "sample"]].ne(frame[["prompt_id", "sample"]].shift()).any(axis=1).cumsum()
    assert runs.max() == len(order)  # contiguous
    assert list(frame.groupby(runs)[["prompt_id", "sample"]].first().itertuples(index=False, name=None)) == order
    assert (frame.groupby(runs)["step"].diff().fillna(1) == 1).all()
    keys = ["prompt_id", "sample"]
    assert written_gen.sort_by([(k, "ascending") for k in keys]).equals(
        generations.sort_by([(k, "ascending") for k in keys])
    )
    token_keys = [(k, "ascending") for k in [*keys, "step"]]
    assert written_tok.sort_by(token_keys).equals(tokens.sort_by(token_keys))


def test_run_generation_keeps_request_order(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    generations, tokens = run_generation(
        model,
        tokenizer,
        make_prompts(),
        model_name="m",
        prompt_set="t",
        options=GenerationOptions(n_samples=2, sampling=SAMPLING, batch_size=3),
        show_progress=False,
    )
    expected = [(f"p{i}", s) for i in range(4) for s in range(2)]
    assert list(zip(generations["prompt_id"].to_pylist(), generations["sample"].to_pylist(), strict=True)) == expected
    frame = tokens.to_pandas()
    assert frame[["prompt_id", "sample"]].drop_duplicates().apply(tuple, axis=1).tolist() == expected


def test_a_failed_write_leaves_no_file(tiny_loaded, tmp_path, monkeypatch):
    import tokenscope.generation.run as run

    model, tokenizer = tiny_loaded("llama")

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("killed")

    monkeypatch.setattr(run, "iter_generations", broken)
    with pytest.raises(RuntimeError, match="killed"):
        write_generation(
            model,
            tokenizer,
            make_prompts(),
            generations_path=tmp_path / "g.parquet",
            tokens_path=tmp_path / "t.parquet",
            model_name="m",
            prompt_set="t",
            options=GenerationOptions(sampling=SAMPLING),
            show_progress=False,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch_size", [3, 32])
def test_prefill_forwards_each_prompt_once_with_prompts_of_similar_length(tiny_loaded, batch_size):
    """Every distinct prompt is forwarded once, however its samples join (all in the first wave at
    batch 32; one by one, as slots free, at batch 3), and prompts of very different lengths are not
    padded to the longest: each prefill forward holds prompts within 10% padding of each other."""
    from tokenscope.model.anatomy import backbone

    model, tokenizer = tiny_loaded("llama")
    forwards: list[tuple[int, int, int]] = []  # (prompts, padded width, real tokens) of each prefill

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        if ids.shape[1] > 1:
            forwards.append((ids.shape[0], ids.shape[1], int(mask.sum())))

    hook = backbone(model).register_forward_pre_hook(record, with_kwargs=True)
    try:
        batched = mixed_length_run(model, tokenizer, batch_size=batch_size)  # 8 prompts x 4 samples
    finally:
        hook.remove()
    prompt_lengths = sorted(len(p) for p in {g.request.prompt_ids for g in batched})
    assert len(prompt_lengths) == 8 and prompt_lengths[-1] > 3 * prompt_lengths[0]  # widely different
    assert sum(n for n, _, _ in forwards) == 8  # each prompt once, not once per sample
    assert sum(real for _, _, real in forwards) == sum(prompt_lengths)
    for n, width, real in forwards:
        assert n * width <= 1.1 * real
