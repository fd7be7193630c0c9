"""Batched generation for sliding-window models: all-sliding (Mistral), full then sliding layers
(Qwen2's max_window_layers), sliding and global layers mixed (Gemma 2 with eager attention and
softcapping, Gemma 3, GPT-OSS with attention sinks), windows of 5-16 positions against prompts of
41-150 tokens. Batch 16, with rows joining mid-generation and the cache compacted, gives the
tokens and metrics of batch 1, and both equal a plain forward pass over the whole sequence.
Layouts the decode loop cannot run are refused with one line naming the model and the layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tokenscope.errors import ModelError
from tokenscope.generation import decode, kv_cache
from tokenscope.generation.decode import DecodeOptions, generate
from tokenscope.generation.kv_cache import PreallocatedLayer, attention_windows, window_slack
from tokenscope.generation.run import generation_requests
from tokenscope.generation.sampling import SamplingParams

from helpers.prompts import make_prompts
from helpers.reference import per_position_reference
from helpers.tiny_models import SLIDING_ARCHS, UNSUPPORTED_ARCHS, tiny_model

STEPS = 40
PARAMS = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=STEPS)
WINDOWS = {
    "mistral-sliding": [7, 7],
    "qwen2-mixed": [None, 9, 9],
    "gemma2-mixed": [6, None, 6, None],
    "gemma3-mixed": [5, 5, None],
    "gpt-oss-mixed": [16, None],
}


@pytest.fixture(scope="module")
def models():
    """arch -> (model, tokenizer), built once per module."""
    built: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = tiny_model(arch)
        return built[arch]

    return get


@pytest.fixture
def decode_log(monkeypatch):
    """The number of requests of every prefill (a wave's first rows, then joining rows), every
    compaction's shift, how many waves ran and cache layers were allocated, every layer's
    (window, buffer columns), and how many times a layer's buffer slid at a step."""
    prefills: list[int] = []
    shifts: list[int] = []
    counts = {"waves": 0, "layers": 0}
    buffers: list[tuple[int | None, int]] = []
    slid: list[int] = [0]
    update = kv_cache.PreallocatedLayer.update

    def logged_update(self, *args, **kwargs):
        held_from = self.held_from
        seen = update(self, *args, **kwargs)
        slid[0] += self.held_from > held_from
        return seen

    monkeypatch.setattr(kv_cache.PreallocatedLayer, "update", logged_update)
    prefill, drop = decode._Decoder.prefill, kv_cache.PreallocatedLayer.drop_leading
    run_wave, init = decode._Decoder.run_wave, kv_cache.PreallocatedLayer.__init__

    def logged_prefill(self, indices):
        prefills.append(len(indices))
        return prefill(self, indices)

    def logged_run_wave(self, queue, slots):
        counts["waves"] += 1
        return run_wave(self, queue, slots)

    def logged_init(self, *args, **kwargs):
        counts["layers"] += 1
        init(self, *args, **kwargs)
        buffers.append((self.window, self.key_buffer.shape[2]))

    monkeypatch.setattr(decode._Decoder, "run_wave", logged_run_wave)
    monkeypatch.setattr(kv_cache.PreallocatedLayer, "__init__", logged_init)

    def logged_drop(self, shift):
        shifts.append(shift)
        drop(self, shift)

    monkeypatch.setattr(decode._Decoder, "prefill", logged_prefill)
    monkeypatch.setattr(kv_cache.PreallocatedLayer, "drop_leading", logged_drop)
    return prefills, shifts, counts, buffers, slid


def mixed_length_run(model, tokenizer, batch_size: int, n_prompts: int = 8):
    """32 requests of prompts 41-150 tokens long; end tokens frequent enough that rows stop at
    very different steps, so queued prompts join while long rows hold the first columns."""
    requests = generation_requests(tokenizer, make_prompts(n_prompts), n_samples=4, seed=11)
    ends = tuple(range(0, len(tokenizer), 60))
    return generate(
        model, tokenizer, requests, PARAMS, DecodeOptions(batch_size=batch_size, eos_ids=ends, show_progress=False)
    )


def assert_same_generations(batched, single):
    for b, s in zip(batched, single, strict=True):
        assert b.request == s.request
        assert b.token_ids.tolist() == s.token_ids.tolist() and b.finish_reason == s.finish_reason
        # fp32 noise of a batched forward: within 1e-5, relative for logprobs of -3 to -10
        np.testing.assert_allclose(b.entropy, s.entropy, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.logprob, s.logprob, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.topk_logprobs, s.topk_logprobs, atol=1e-5, rtol=1e-5)
        assert b.rank.tolist() == s.rank.tolist()


@pytest.mark.parametrize("arch", SLIDING_ARCHS)
def test_batch_16_with_joins_and_compaction_equals_batch_1_and_a_full_forward(models, arch, decode_log):
    model, tokenizer = models(arch)
    assert attention_windows(model) == WINDOWS[arch]
    window = max(w for w in WINDOWS[arch] if w is not None)
    prefills, shifts, counts, buffers, slid = decode_log
    batched = mixed_length_run(model, tokenizer, batch_size=16)
    assert prefills[0] == 16 and len(prefills) > 2 + counts["waves"], prefills  # rows joined mid-generation
    assert shifts, "the run never compacted its cache"
    assert counts["layers"] == len(WINDOWS[arch]) * counts["waves"]  # joins reuse the wave's buffers
    # sliding-window layers hold only their window (+ slack), and their buffers slid during the run
    for layer_window, columns in buffers:
        if layer_window is None:  # a full-attention layer holds the longest prompt and its answer
            assert columns > 150 + STEPS
        else:  # shorter than any prompt + its answer
            assert columns == layer_window + window_slack(layer_window) < 41 + STEPS
    assert slid[0] > 0
    prefills.clear()
    single = mixed_length_run(model, tokenizer, batch_size=1)
    assert set(prefills) == {1}
    lengths = [len(g.token_ids) for g in batched]
    assert min(lengths) < 10 and max(lengths) == STEPS and {g.finish_reason for g in batched} == {"eos", "length"}
    assert min(len(g.request.prompt_ids) for g in batched) > window  # windows shorter than every prompt
    assert_same_generations(batched, single)
    for b in batched[::4]:  # both equal the model's own forward pass over the whole sequence
        ids = list(b.request.prompt_ids) + b.token_ids.tolist()
        expected = pd.DataFrame(per_position_reference(model, tokenizer, ids, len(b.request.prompt_ids)))
        np.testing.assert_allclose(b.entropy, expected["entropy"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(b.logprob), expected["probability_of_next_token"], atol=1e-4, rtol=0)
        assert b.rank.tolist() == expected["rank"].tolist()


def test_the_windows_change_the_metrics(models):
    """A control: without its windows the same model gives other metrics, so the tests above
    would see a window applied wrongly."""
    model, tokenizer = models("gemma3-mixed")
    generation = mixed_length_run(model, tokenizer, batch_size=16, n_prompts=2)[0]
    ids = list(generation.request.prompt_ids) + generation.token_ids.tolist()
    with_windows = pd.DataFrame(per_position_reference(model, tokenizer, ids, len(generation.request.prompt_ids)))
    window = model.config.sliding_window
    try:
        model.config.sliding_window = 10_000
        without = pd.DataFrame(per_position_reference(model, tokenizer, ids, len(generation.request.prompt_ids)))
    finally:
        model.config.sliding_window = window
    np.testing.assert_allclose(generation.entropy, with_windows["entropy"], atol=1e-4, rtol=0)
    assert np.abs(with_windows["entropy"] - without["entropy"]).max() > 1e-2


@pytest.mark.parametrize("batch_size", [64, 7])
def test_batch_larger_than_the_requests_is_fine(models, batch_size):
    model, tokenizer = models("qwen2-mixed")
    requests = generation_requests(tokenizer, make_prompts(3), n_samples=2, seed=3)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12)
    batched = generate(model, tokenizer, requests, params, DecodeOptions(batch_size=batch_size, show_progress=False))
    single = generate(model, tokenizer, requests, params, DecodeOptions(batch_size=1, show_progress=False))
    assert_same_generations(batched, single)


def test_layer_types_come_from_the_config_not_the_name(models):
    from transformers import Qwen2Config

    model, _ = models("qwen2-mixed")
    config = model.config
    try:
        model.config = Qwen2Config(**{**config.to_dict(), "use_sliding_window": False, "layer_types": None})
        assert attention_windows(model) == [None, None, None]
        model.config = Qwen2Config(**{**config.to_dict(), "max_window_layers": 2, "layer_types": None})
        assert attention_windows(model) == [None, None, 9]
    finally:
        model.config = config


@pytest.mark.parametrize("arch", sorted(UNSUPPORTED_ARCHS))
def test_unsupported_layouts_are_refused_in_one_line(arch):
    model, tokenizer = tiny_model(arch)
    requests = generation_requests(tokenizer, make_prompts(2), n_samples=2, seed=0)
    params = SamplingParams(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4)
    with pytest.raises(ModelError) as caught:
        generate(model, tokenizer, requests, params, DecodeOptions(batch_size=4, show_progress=False))
    message = str(caught.value)
    assert "\n" not in message
    assert f"({model.config.model_type})" in message and UNSUPPORTED_ARCHS[arch] in message


def test_state_space_models_are_refused(models, monkeypatch):
    """Mamba keeps no per-layer keys and values: refused from its config; and a forward that does
    not fill the key/value cache it was given is refused at the first prefill, not decoded wrongly."""
    from transformers import DynamicCache, MambaConfig, MambaForCausalLM

    model, tokenizer = models("mistral-sliding")
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, state_size=4)
    mamba = MambaForCausalLM(config).eval()
    requests = generation_requests(tokenizer, make_prompts(2), n_samples=1, seed=0)
    params = SamplingParams(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4)
    with pytest.raises(ModelError, match=r"\(mamba\): layer type\(s\) linear_attention not supported"):
        generate(mamba, tokenizer, requests, params, DecodeOptions(batch_size=2, show_progress=False))
    monkeypatch.setattr(decode, "output_cache", lambda out: DynamicCache())  # a cache other than the one given
    with pytest.raises(ModelError, match=r"\(mistral\): its forward does not fill one key/value cache layer"):
        generate(model, tokenizer, requests, params, DecodeOptions(batch_size=2, show_progress=False))


def test_a_sliding_layer_exposes_its_window_and_the_new_column():
    keys = torch.zeros(1, 1, 16, 1)
    keys[0, 0, :10, 0] = torch.arange(10.0)  # 10 filled columns of 16
    layer = PreallocatedLayer(keys, keys.clone(), length=10, window=4)
    assert layer.is_sliding and layer.get_seq_length() == 10
    assert layer.get_mask_sizes(1) == (5, 6)  # columns 6..10: four past columns and the new one
    seen, _ = layer.update(torch.full((1, 1, 1, 1), 10.0), torch.full((1, 1, 1, 1), 10.0))
    assert seen.flatten().tolist() == [6.0, 7.0, 8.0, 9.0, 10.0]
    full = PreallocatedLayer(keys, keys.clone(), length=10)
    assert not full.is_sliding and full.get_mask_sizes(1) == (11, 0)


def test_a_sliding_layer_holds_its_window_in_a_buffer_that_slides():
    """A window of 4 in a buffer of 6 columns: over 30 steps, a prompt written before the current
    column, and compactions, attention always sees the last four columns and the new one, by
    their column numbers, and the buffer never grows."""
    window, capacity = 4, 6
    keys = torch.full((2, 1, capacity, 1), -1.0)
    layer = PreallocatedLayer(keys, keys.clone(), length=9, window=window, held_from=5)
    layer.write_rows(torch.tensor([0, 1]), *(torch.arange(9.0).expand(2, 1, 9).unsqueeze(-1),) * 2)  # columns 0-8
    assert layer.keys[0, 0, :, 0].tolist() == [5.0, 6.0, 7.0, 8.0]  # only the window is held
    offset = 0  # column numbers drop by every compaction's shift
    for step in range(30):
        column = layer.length
        if step in (7, 19):
            layer.drop_leading(3)
            offset += 3
            column = layer.length
        assert layer.get_mask_sizes(1) == (window + 1, column - window)
        value = torch.full((2, 1, 1, 1), float(column + offset))
        seen, _ = layer.update(value, value.clone())
        assert seen[1, 0, :, 0].tolist() == [float(c + offset) for c in range(column - window, column + 1)]
        assert layer.key_buffer.shape[2] == capacity and layer.held_from <= column - window
    joined = torch.tensor([1])  # a prompt of 7 columns joins row 1, ending right before the current column
    layer.write_rows(joined, *(torch.full((1, 1, 7, 1), 100.0),) * 2)
    assert layer.keys[1, 0, -window:, 0].tolist() == [100.0] * window


@pytest.mark.parametrize(("window", "held_from", "shift"), [(4, 5, 6), (20, 10, 11), (20, 10, 4)])
def test_a_compaction_moves_or_renumbers_a_sliding_layer_s_columns(window, held_from, shift):
    """Dropping more leading columns than the layer had let go moves the rest to the front (one
    column in chunks, or through one copy when that would take many chunks); fewer only renumbers."""
    length = held_from + window + 6
    columns = torch.arange(held_from, length, dtype=torch.float32)  # the value of a column is its number
    keys = torch.zeros(2, 1, length - held_from + 8, 1)
    keys[:, 0, : columns.numel(), 0] = columns
    layer = PreallocatedLayer(keys, keys.clone(), length=length, window=window, held_from=held_from)
    layer.drop_leading(shift)
    assert layer.length == length - shift and layer.held_from == max(held_from, shift) - shift
    expected = [float(c) for c in range(max(held_from, shift), length)]
    assert layer.keys[1, 0, :, 0].tolist() == expected and layer.values[0, 0, :, 0].tolist() == expected
