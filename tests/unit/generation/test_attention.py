"""Attention in the decode loop: transformers' SDPA path, which for a one-token decode step folds the
query heads of each key/value group into the query axis (`pack_gqa`) instead of repeating the KV
cache's heads (`repeat_kv`, a copy of the whole cache per layer per step), agrees with the eager
implementation, and never copies the cache's heads while decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.prompts import make_prompts
from helpers.tiny_models import ARCHS


def _generate(model, tokenizer, do_sample: bool, batch_size: int = 4):
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    requests = generation_requests(tokenizer, make_prompts(), n_samples=2, seed=3)
    params = SamplingParams(do_sample=do_sample, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=12)
    return generate(model, tokenizer, requests, params, DecodeOptions(batch_size=batch_size, show_progress=False))


@pytest.mark.parametrize("arch", ARCHS)  # llama and qwen2: grouped-query attention; gpt2: multi-head
@pytest.mark.parametrize("do_sample", [False, True])
def test_decode_attention_agrees_with_eager(tiny_loaded, arch, do_sample):
    """The same tokens, and metrics within 1e-5, with the model's SDPA attention and with eager."""
    from tokenscope.model.anatomy import eager_attention

    model, tokenizer = tiny_loaded(arch)
    assert model.config._attn_implementation == "sdpa"
    with_sdpa = _generate(model, tokenizer, do_sample)
    with eager_attention(model):
        with_eager = _generate(model, tokenizer, do_sample)
    assert model.config._attn_implementation == "sdpa"
    for a, b in zip(with_sdpa, with_eager, strict=True):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_decode_steps_do_not_repeat_kv_heads(tiny_loaded, arch, monkeypatch):
    """Decode steps (one query token) attend over the cache's own key/value heads: no repeat_kv,
    the query heads of a group packed into the query axis; prompts (prefill) may repeat them."""
    import transformers.integrations.sdpa_attention as sdpa_attention

    from tokenscope.model.anatomy import backbone

    model, tokenizer = tiny_loaded(arch)
    config = model.config
    kv_heads, heads = config.num_key_value_heads, config.num_attention_heads
    assert kv_heads < heads  # the tiny model has grouped-query attention
    decoding: list[bool] = [False]
    repeats = {True: 0, False: 0}
    decode_calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    repeat_kv, sdpa = sdpa_attention.repeat_kv, torch.nn.functional.scaled_dot_product_attention

    def counting_repeat_kv(hidden, n_rep):
        repeats[decoding[0]] += 1
        return repeat_kv(hidden, n_rep)

    def recording_sdpa(query, key, value, *args, **kwargs):
        if decoding[0]:
            decode_calls.append((tuple(query.shape), tuple(key.shape)))
        return sdpa(query, key, value, *args, **kwargs)

    def before(module, args, kwargs):
        decoding[0] = kwargs["input_ids"].shape[1] == 1

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counting_repeat_kv)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    handle = backbone(model).register_forward_pre_hook(before, with_kwargs=True)
    try:
        generations = _generate(model, tokenizer, do_sample=True, batch_size=3)
    finally:
        handle.remove()
    assert all(len(g.token_ids) > 1 for g in generations)
    assert decode_calls, "no decode step went through SDPA"
    assert repeats[True] == 0
    for query, key in decode_calls:
        assert key[1] == kv_heads  # the cache's heads, not repeated
        assert query[1:3] == (kv_heads, heads // kv_heads)  # query heads of a group packed
