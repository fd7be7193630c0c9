"""The batched decoder (generation.decode.generate): rows that finish early leave the batch, or
hand their cache slot to a queued prompt, without changing any row's tokens or metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.prompts import make_prompts
from helpers.reference import per_position_reference
from helpers.tiny_models import ARCHS


@pytest.mark.parametrize("arch", [*ARCHS, "qwen2-sliding"])
@pytest.mark.parametrize("batch_size", [12, 5])
def test_rows_leaving_the_batch_keep_exact_metrics(tiny_loaded, arch, batch_size):
    """Many end tokens make rows finish at different steps: with 12 slots the batch shrinks, with
    5 slots queued prompts take over finished rows' cache slots mid-generation."""
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    model, tokenizer = tiny_loaded(arch)
    requests = generation_requests(tokenizer, make_prompts(), n_samples=3, seed=5)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16)
    frequent_ends = tuple(range(0, len(tokenizer), 25))
    batched = generate(
        model,
        tokenizer,
        requests,
        params,
        DecodeOptions(batch_size=batch_size, eos_ids=frequent_ends, show_progress=False),
    )
    single = generate(
        model, tokenizer, requests, params, DecodeOptions(batch_size=1, eos_ids=frequent_ends, show_progress=False)
    )
    lengths = [len(g.token_ids) for g in batched]
    assert len(set(lengths)) > 2 and min(lengths) < 16  # rows really left at different steps
    assert any(g.finish_reason == "eos" for g in batched) and any(g.finish_reason == "length" for g in batched)
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids.tolist() == s.token_ids.tolist()
        ids = list(b.request.prompt_ids) + b.token_ids.tolist()
        expected = pd.DataFrame(per_position_reference(model, tokenizer, ids, len(b.request.prompt_ids)))
        np.testing.assert_allclose(b.entropy, expected["entropy"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.exp(b.logprob), expected["probability_of_next_token"], atol=1e-4, rtol=0)
