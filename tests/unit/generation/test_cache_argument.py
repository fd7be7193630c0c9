"""The decode loop passes the KV cache under transformers' current argument name (`cache`) and reads
the prefill's cache under its current attribute, so no deprecation warning is raised per step."""

from __future__ import annotations

import warnings

import pytest

from tokenscope.generation.decode import DecodeOptions, generate
from tokenscope.generation.run import generation_requests
from tokenscope.generation.sampling import SamplingParams

from helpers.prompts import make_prompts
from helpers.tiny_models import ARCHS


@pytest.mark.parametrize("arch", [*ARCHS, "qwen2-sliding"])
def test_decode_raises_no_cache_deprecation(tiny_loaded, arch, monkeypatch):
    import transformers.utils.generic as generic

    model, tokenizer = tiny_loaded(arch)
    logged: list[str] = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda message, *a, **k: logged.append(str(message)))
    requests = generation_requests(tokenizer, make_prompts(3), n_samples=2, seed=1)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(model, tokenizer, requests, params, DecodeOptions(batch_size=2, show_progress=False))
    messages = [str(w.message) for w in caught] + logged
    assert not [m for m in messages if "past_key_values" in m], messages
