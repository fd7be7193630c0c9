"""Both models' top-k alternatives in cross-scoring (scoring.cross_scoring.pair_scores, and the pair
table's topk_*_a / topk_*_b columns): each model's equal its own teacher-forced scoring's topk_* on
the same tokens; without alternatives the table keeps the plain pair schema."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tokenscope.inputs.sequences import ScoredSequence
from tokenscope.scoring.cross_scoring import pair_divergence, pair_scores, score_pair
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.tables import PAIR_ALTERNATIVES_SCHEMA, PAIR_SCHEMA
from tokenscope.scoring.teacher_forcing import score_sequences

from helpers.tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    from tokenscope.model.loading import LoadOptions, load_prepared
    from tokenscope.model.sources import ModelSpec, prepare_model

    root = tmp_path_factory.mktemp("tiny-llama-seed1")
    save_tiny_checkpoint(root / "checkpoint", "llama", seed=1)
    prepare_model(ModelSpec(name="llama-b", kind="path", location=str(root / "checkpoint")), root / "prepared")
    return load_prepared(root / "prepared", LoadOptions(device="cpu", dtype="float32"))[0]


def sequences_of(vocab_size: int) -> tuple[list[list[int]], list[int]]:
    rng = np.random.default_rng(7)
    lengths, starts = [9, 23, 4, 17, 2, 12], [3, 1, 4, 10, 1, 6]
    return [rng.integers(0, vocab_size, size=n).tolist() for n in lengths], starts


@pytest.mark.parametrize(("batch_size", "chunk_rows"), [(1, 512), (3, 5)])
def test_each_models_alternatives_equal_its_own_scoring(tiny_loaded, model_b, batch_size, chunk_rows):
    model_a, tokenizer = tiny_loaded("llama")
    sequences, starts = sequences_of(len(tokenizer))
    options = ScoringOptions(n_alternatives=4, batch_size=batch_size, chunk_rows=chunk_rows)
    kwargs = {"pad_id": tokenizer.pad_token_id, "show_progress": False}
    metrics, alternatives = pair_scores(model_a, model_b, sequences, starts, options, **kwargs)
    n = sum(len(s) - st for s, st in zip(sequences, starts, strict=True))
    assert alternatives.topk_ids_a.shape == (n, 4) and alternatives.topk_ids_b.dtype == torch.int32
    for side, model in (("a", model_a), ("b", model_b)):
        own = score_sequences(model, sequences, starts, options, **kwargs)
        torch.testing.assert_close(getattr(alternatives, f"topk_ids_{side}"), own.topk_ids, atol=0, rtol=0)
        torch.testing.assert_close(getattr(alternatives, f"topk_logprobs_{side}"), own.topk_logprobs, atol=1e-6, rtol=0)
    # The models differ: their alternatives are not the same lists.
    assert not torch.equal(alternatives.topk_ids_a, alternatives.topk_ids_b)
    # The metrics are pair_divergence's.
    plain = pair_divergence(model_a, model_b, sequences, starts, options, **kwargs)
    torch.testing.assert_close(metrics.kl_a_b, plain.kl_a_b, atol=0, rtol=0)
    torch.testing.assert_close(metrics.logprob_b, plain.logprob_b, atol=0, rtol=0)


def test_pair_table_carries_both_models_alternatives(tiny_loaded, model_b):
    model_a, tokenizer = tiny_loaded("llama")
    sequences, starts = sequences_of(len(tokenizer))
    scored = [
        ScoredSequence(f"p{i}", 0, np.array(s), st, prompt_length=max(1, st - 1))
        for i, (s, st) in enumerate(zip(sequences, starts, strict=True))
    ]
    common = {
        "model_a_name": "base",
        "model_b_name": "rl",
        "source": "base",
        "prompt_set": "t",
        "show_progress": False,
    }
    options = ScoringOptions(n_alternatives=3, batch_size=2, chunk_rows=3)
    with_alternatives = score_pair(model_a, tokenizer, model_b, tokenizer, scored, options=options, **common)
    without_options = replace(options, n_alternatives=0)
    without = score_pair(model_a, tokenizer, model_b, tokenizer, scored, options=without_options, **common)
    assert with_alternatives.schema == PAIR_ALTERNATIVES_SCHEMA and without.schema == PAIR_SCHEMA
    assert with_alternatives.select(PAIR_SCHEMA.names).equals(without)
    frame = with_alternatives.to_pandas()
    own_b = score_sequences(model_b, sequences, starts, options, show_progress=False)
    assert [list(v) for v in frame["topk_ids_b"]] == own_b.topk_ids.tolist()
    np.testing.assert_allclose(np.stack(frame["topk_probs_b"]), own_b.topk_logprobs.exp().numpy(), rtol=1e-5)
    probs_a = np.stack(frame["topk_probs_a"])
    assert probs_a.shape == (len(frame), 3) and (np.diff(probs_a, axis=1) <= 0).all()  # most probable first
    # The token's own probability is among a model's alternatives exactly when its rank is within k.
    ids_a = np.stack(frame["topk_ids_a"])
    hit = (ids_a == frame["token_id"].to_numpy()[:, None]).any(axis=1)
    own_a = score_sequences(model_a, sequences, starts, options, show_progress=False)
    assert hit.tolist() == (own_a.rank <= 3).tolist()
