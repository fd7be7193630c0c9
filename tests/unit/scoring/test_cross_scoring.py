"""Cross-scoring (scoring.cross_scoring): per-token KL between two checkpoints equals the definition
on full logits; the pair table's rows and schema; models that cannot be compared are refused."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tokenscope.errors import ModelError, TokenizerMismatchError
from tokenscope.inputs.sequences import (
    ScoredSequence,
    generation_file_sequences,
    generation_table_sequences,
    sequence_chunks,
)
from tokenscope.model.loading import LoadOptions, load_prepared
from tokenscope.model.sources import ModelSpec, prepare_model
from tokenscope.scoring.cross_scoring import pair_divergence, score_pair, write_pair
from tokenscope.scoring.formulas import PairMetrics
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.tables import PAIR_ALTERNATIVES_SCHEMA, PAIR_SCHEMA
from tokenscope.scoring.teacher_forcing import score_sequences

from helpers.tiny_models import ARCHS, build_tokenizer, save_tiny_checkpoint, tiny_config


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory):
    """arch -> (model, tokenizer) of a tiny model with the shared tokenizer but other weights."""
    cache: dict[str, tuple] = {}

    def load(arch: str):
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{arch}-seed1")
            save_tiny_checkpoint(root / "checkpoint", arch, seed=1)
            prepare_model(
                ModelSpec(name=f"{arch}-b", kind="path", location=str(root / "checkpoint")), root / "prepared"
            )
            cache[arch] = load_prepared(root / "prepared", LoadOptions(device="cpu", dtype="float32"))
        return cache[arch]

    return load


def random_sequences(vocab_size: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Sequences of varied lengths; scoring starts include the first possible one and the end."""
    rng = np.random.default_rng(seed)
    lengths = [9, 23, 4, 17, 2, 30, 12]
    sequences = [rng.integers(0, vocab_size, size=n).tolist() for n in lengths]
    starts = [3, 1, 4, 10, 1, 29, 6]  # 4 == len: a sequence with nothing to score
    return sequences, starts


def brute_force(model_a, model_b, sequences, starts) -> dict[str, np.ndarray]:
    """The definitions on whole [sequence x vocabulary] logits, one unpadded sequence at a time."""
    out: dict[str, list] = {k: [] for k in ("kl_a_b", "kl_b_a", "logprob_a", "logprob_b", "entropy_a", "entropy_b")}
    with torch.no_grad():
        for ids, start in zip(sequences, starts, strict=True):
            x = torch.tensor([ids])
            logp_a = torch.log_softmax(model_a(input_ids=x).logits[0].double(), -1)
            logp_b = torch.log_softmax(model_b(input_ids=x).logits[0].double(), -1)
            for t in range(start, len(ids)):
                a, b = logp_a[t - 1], logp_b[t - 1]
                out["kl_a_b"].append(float((a.exp() * (a - b)).sum()))
                out["kl_b_a"].append(float((b.exp() * (b - a)).sum()))
                out["logprob_a"].append(float(a[ids[t]]))
                out["logprob_b"].append(float(b[ids[t]]))
                out["entropy_a"].append(float(-(a.exp() * a).sum()))
                out["entropy_b"].append(float(-(b.exp() * b).sum()))
    return {k: np.array(v) for k, v in out.items()}


def as_numpy(metrics: PairMetrics) -> dict[str, np.ndarray]:
    return {
        k: getattr(metrics, k).numpy() for k in ("kl_a_b", "kl_b_a", "logprob_a", "logprob_b", "entropy_a", "entropy_b")
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_pair_metrics_match_full_logits(tiny_loaded, other_seed, arch):
    model_a, tokenizer = tiny_loaded(arch)
    model_b, _ = other_seed(arch)
    sequences, starts = random_sequences(len(tokenizer))
    got = pair_divergence(
        model_a,
        model_b,
        sequences,
        starts,
        ScoringOptions(batch_size=3, chunk_rows=5),
        pad_id=tokenizer.pad_token_id,
        show_progress=False,
    )
    expected = brute_force(model_a, model_b, sequences, starts)
    assert len(expected["kl_a_b"]) == sum(len(s) - st for s, st in zip(sequences, starts, strict=True))
    for name, values in as_numpy(got).items():
        assert values.dtype == np.float32
        np.testing.assert_allclose(values, expected[name], atol=1e-4, rtol=1e-4, err_msg=name)
    assert (got.kl_a_b >= 0).all() and (got.kl_b_a >= 0).all()
    assert got.kl_a_b.mean() > 0.01  # the two random models really differ
    assert not torch.allclose(got.kl_a_b, got.kl_b_a)  # KL is not symmetric
    torch.testing.assert_close(got.logprob_diff, got.logprob_b - got.logprob_a)


@pytest.mark.parametrize("arch", ARCHS)
def test_model_against_itself_has_zero_divergence(tiny_loaded, arch):
    model, tokenizer = tiny_loaded(arch)
    sequences, starts = random_sequences(len(tokenizer), seed=1)
    got = pair_divergence(
        model, model, sequences, starts, ScoringOptions(batch_size=4, chunk_rows=7), show_progress=False
    )
    assert got.kl_a_b.abs().max() <= 1e-6 and got.kl_b_a.abs().max() <= 1e-6
    torch.testing.assert_close(got.logprob_a, got.logprob_b)


@pytest.mark.parametrize("arch", ARCHS)
def test_invariant_to_batch_size_and_chunk_rows(tiny_loaded, other_seed, arch):
    model_a, tokenizer = tiny_loaded(arch)
    model_b, _ = other_seed(arch)
    sequences, starts = random_sequences(len(tokenizer), seed=2)
    runs = [
        as_numpy(
            pair_divergence(
                model_a,
                model_b,
                sequences,
                starts,
                ScoringOptions(batch_size=b, chunk_rows=c),
                pad_id=tokenizer.pad_token_id,
                show_progress=False,
            )
        )
        for b, c in [(1, 512), (3, 1), (16, 7), (2, 10_000)]
    ]
    for run in runs[1:]:
        for name in run:
            np.testing.assert_allclose(run[name], runs[0][name], atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_model_a_equals_its_own_scoring(tiny_loaded, other_seed, arch, batch_size):
    model_a, tokenizer = tiny_loaded(arch)
    model_b, _ = other_seed(arch)
    sequences, starts = random_sequences(len(tokenizer), seed=3)
    options = ScoringOptions(batch_size=batch_size, chunk_rows=4)
    kwargs = {"pad_id": tokenizer.pad_token_id, "show_progress": False}
    pair = pair_divergence(model_a, model_b, sequences, starts, options, **kwargs)
    own_a = score_sequences(model_a, sequences, starts, options, **kwargs)
    own_b = score_sequences(model_b, sequences, starts, options, **kwargs)
    torch.testing.assert_close(pair.logprob_a, own_a.logprob, atol=1e-6, rtol=0)
    torch.testing.assert_close(pair.entropy_a, own_a.entropy, atol=1e-6, rtol=0)
    torch.testing.assert_close(pair.logprob_b, own_b.logprob, atol=1e-6, rtol=0)
    torch.testing.assert_close(pair.entropy_b, own_b.entropy, atol=1e-6, rtol=0)


def test_no_sequences_give_empty_metrics(tiny_loaded):
    model, _ = tiny_loaded("llama")
    got = pair_divergence(model, model, [], [], show_progress=False)
    assert got.kl_a_b.shape == (0,)


def test_pair_table_rows_and_schema(tiny_loaded, other_seed, tmp_path):
    model_a, tokenizer = tiny_loaded("llama")
    model_b, tokenizer_b = other_seed("llama")
    sequences, starts = random_sequences(len(tokenizer), seed=4)
    scored = [
        ScoredSequence(f"p{i}", i % 2, np.array(s), st, prompt_length=max(1, st - 1))
        for i, (s, st) in enumerate(zip(sequences, starts, strict=True))
    ]
    table = score_pair(
        model_a,
        tokenizer,
        model_b,
        tokenizer_b,
        scored,
        model_a_name="base",
        model_b_name="rl",
        source="reference",
        prompt_set="t",
        options=ScoringOptions(n_alternatives=0, batch_size=2, chunk_rows=3),
        show_progress=False,
    )
    assert table.schema == PAIR_SCHEMA
    pq.write_table(table, tmp_path / "pairs.parquet")
    frame = pq.read_table(tmp_path / "pairs.parquet").to_pandas()
    assert pq.read_schema(tmp_path / "pairs.parquet").metadata[b"tokenscope_table"] == b"pairs"
    assert len(frame) == sum(len(s) - st for s, st in zip(sequences, starts, strict=True))
    assert (
        set(frame["model_a"]) == {"base"} and set(frame["model_b"]) == {"rl"} and set(frame["source"]) == {"reference"}
    )
    for seq in scored:
        rows = frame[frame["prompt_id"] == seq.prompt_id]
        assert rows["position"].tolist() == list(range(seq.score_start, len(seq.token_ids)))
        assert rows["step"].tolist() == list(range(len(rows)))
        assert rows["token_id"].tolist() == seq.token_ids[seq.score_start :].tolist()
        assert rows["context_token_id"].tolist() == seq.token_ids[seq.score_start - 1 : -1].tolist()
        assert (rows["sample"] == seq.sample).all()
        expected_segment = np.where(rows["position"] >= seq.prompt_length, "completion", "prompt")
        assert rows["segment"].tolist() == expected_segment.tolist()
    np.testing.assert_allclose(frame["logprob_diff"], frame["logprob_b"] - frame["logprob_a"], atol=1e-6)
    expected = brute_force(model_a, model_b, sequences, starts)
    np.testing.assert_allclose(frame["kl_a_b"], expected["kl_a_b"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(frame["entropy_b"], expected["entropy_b"], atol=1e-4, rtol=1e-4)


def scored_sequences(vocab_size: int, seed: int) -> list[ScoredSequence]:
    sequences, starts = random_sequences(vocab_size, seed=seed)
    return [
        ScoredSequence(f"p{i}", i % 2, np.array(s), st, prompt_length=max(1, st - 1))
        for i, (s, st) in enumerate(zip(sequences, starts, strict=True))
    ]


PAIR_NAMES = {"model_a_name": "base", "model_b_name": "rl", "source": "base", "prompt_set": "t"}
NO_ALTERNATIVES = ScoringOptions(n_alternatives=0)


def test_write_pair_streams_the_rows_of_score_pair_chunk_by_chunk(tiny_loaded, other_seed, tmp_path):
    """Chunks of about 25 tokens (several sequences each, one row group each) give score_pair's
    table: the same keys and ids in the same order, floats within fp32 noise of other batches."""
    model_a, tokenizer = tiny_loaded("llama")
    model_b, tokenizer_b = other_seed("llama")
    scored = scored_sequences(len(tokenizer), seed=5) + scored_sequences(len(tokenizer), seed=6)
    scoring = ScoringOptions(n_alternatives=3, batch_size=2, chunk_rows=5)
    options = {**PAIR_NAMES, "options": scoring, "show_progress": False}
    whole = score_pair(model_a, tokenizer, model_b, tokenizer_b, scored, **options)
    chunks = list(sequence_chunks(scored, 25))
    assert len(chunks) > 3 and [s for chunk in chunks for s in chunk] == scored
    assert all(sum(len(s.token_ids) for s in chunk[:-1]) < 25 for chunk in chunks)
    path = tmp_path / "pairs.parquet"
    rows = write_pair(model_a, tokenizer, model_b, tokenizer_b, iter(chunks), path, **options)
    written = pq.read_table(path)
    assert rows == written.num_rows == whole.num_rows
    assert written.schema == PAIR_ALTERNATIVES_SCHEMA and written.schema.metadata == PAIR_ALTERNATIVES_SCHEMA.metadata
    assert pq.ParquetFile(path).metadata.num_row_groups == sum(
        1 for chunk in chunks if sum(len(s.token_ids) - s.score_start for s in chunk)
    )
    got, expected = written.to_pandas(), whole.to_pandas()
    exact = ["prompt_id", "sample", "position", "step", "segment", "token_id", "context_token_id", "topk_ids_a"]
    for column in exact:
        assert got[column].astype(str).tolist() == expected[column].astype(str).tolist(), column
    for column in ["logprob_a", "logprob_b", "entropy_a", "entropy_b", "kl_a_b", "kl_b_a"]:
        np.testing.assert_allclose(got[column], expected[column], atol=1e-5, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.parquet"]  # no temporary file left


def test_write_pair_leaves_no_file_when_interrupted(tiny_loaded, other_seed, tmp_path):
    model_a, tokenizer = tiny_loaded("llama")
    model_b, tokenizer_b = other_seed("llama")
    scored = scored_sequences(len(tokenizer), seed=5)

    def interrupted():
        yield scored[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_pair(
            model_a, tokenizer, model_b, tokenizer_b, interrupted(), tmp_path / "pairs.parquet", **PAIR_NAMES,
            options=NO_ALTERNATIVES,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.parquet"  # no sequences: an empty table with the schema
    rows = write_pair(
        model_a, tokenizer, model_b, tokenizer_b, [], empty, **PAIR_NAMES, options=NO_ALTERNATIVES, show_progress=False
    )
    assert rows == 0
    assert pq.read_table(empty).num_rows == 0 and pq.read_schema(empty) == PAIR_SCHEMA


def test_generation_file_sequences_read_a_table_in_its_row_order(tiny_loaded, tmp_path):
    """A generations file read a record batch at a time gives the sequences of the whole table."""
    from tokenscope.generation.options import GenerationOptions
    from tokenscope.generation.run import run_generation

    from helpers.prompts import make_prompts

    model, tokenizer = tiny_loaded("llama")
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 6}
    generations, _ = run_generation(
        model, tokenizer, make_prompts(), model_name="m", prompt_set="t",
        options=GenerationOptions(n_samples=3, sampling=sampling, batch_size=4), show_progress=False,
    )  # fmt: skip
    path = tmp_path / "generations.parquet"
    pq.write_table(generations, path, row_group_size=5)
    streamed = list(generation_file_sequences(path))
    whole = generation_table_sequences(generations.to_pandas())
    assert len(streamed) == len(whole) == generations.num_rows > 5
    for a, b in zip(streamed, whole, strict=True):
        assert (a.prompt_id, a.sample, a.score_start, a.prompt_length) == (
            b.prompt_id,
            b.sample,
            b.score_start,
            b.prompt_length,
        )
        assert a.token_ids.tolist() == b.token_ids.tolist()


def test_different_tokenizers_are_refused_naming_both(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    other_tokenizer = build_tokenizer(vocab_size=300)
    scored = [ScoredSequence("p0", 0, np.array([1, 2, 3]), 1, 1)]
    with pytest.raises(TokenizerMismatchError, match="'base'.*'other'"):
        score_pair(
            model,
            tokenizer,
            model,
            other_tokenizer,
            scored,
            model_a_name="base",
            model_b_name="other",
            source="reference",
            prompt_set="t",
            show_progress=False,
        )


def test_different_vocabulary_sizes_are_refused(tiny_loaded):
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_loaded("llama")
    smaller = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer) - 8, 0, 0)).eval()
    with pytest.raises(ModelError, match="'base' and 'small'.*vocabularies"):
        pair_divergence(model, smaller, [[1, 2, 3]], [1], names=("base", "small"), show_progress=False)
