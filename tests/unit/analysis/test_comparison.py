"""compare_group on small parquet tables with the workflow's schemas, against pandas references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenscope.analysis.comparison import StatsOptions, compare_group
from tokenscope.analysis.stats import BootstrapOptions, TokenChangeOptions, paired_tests
from tokenscope.scoring.tables import PAIR_SCHEMA, TOKEN_SCHEMA

MODELS = ["base", "ckpt1", "ckpt2"]


def token_rows(rng: np.random.Generator, model: str, n_prompts: int = 12, length: int = 40) -> pd.DataFrame:
    prompt = np.repeat([f"q{i:02d}" for i in range(n_prompts)], 2 * length)
    sample = np.tile(np.repeat([0, 1], length), n_prompts)
    token_id = rng.integers(0, 12, prompt.size).astype(np.int32)
    entropy = (rng.gamma(2.0, 0.5, prompt.size) * np.where(rng.random(prompt.size) < 0.3, 0.01, 1.0)).astype(np.float32)
    entropy[5] = np.nan
    logprob = (-entropy * rng.uniform(0, 1, prompt.size)).astype(np.float32)
    return pd.DataFrame(
        {
            "model": model,
            "source": model,
            "prompt_set": "t",
            "prompt_id": prompt,
            "sample": sample.astype(np.int32),
            "step": np.tile(np.arange(length, dtype=np.int32), 2 * n_prompts),
            "position": np.tile(np.arange(10, 10 + length, dtype=np.int32), 2 * n_prompts),
            "segment": "completion",
            "context_token_id": np.roll(token_id, 1),
            "context_token": [f"c{t}" for t in np.roll(token_id, 1)],
            "context_piece": "x",
            "token_id": token_id,
            # id 3 prints two ways (a multi-byte character split across tokens): the commoner wins
            "token": [f"t{t}" if t != 3 or i % 3 else "" for i, t in enumerate(token_id)],
            "token_piece": "x",
            "entropy": entropy,
            "logprob": logprob,
            "prob": np.exp(logprob),
            "rank": np.zeros(prompt.size, np.int32),
            "varentropy": entropy,
            "margin": np.ones(prompt.size, np.float32),
            "sampling_entropy": entropy,
            "tempered_entropy": entropy,
            "topk_ids": [[1, 2]] * prompt.size,
            "topk_pieces": [["a", "b"]] * prompt.size,
            "topk_probs": [[0.5, 0.25]] * prompt.size,
            "in_answer": False,
        }
    )


def pair_rows(rng: np.random.Generator, base: pd.DataFrame, model: str, shift: float) -> pd.DataFrame:
    n = len(base)
    entropy_b = (base["entropy"] + shift * (base["token_id"] == 4) + rng.normal(0, 0.05, n)).astype(np.float32)
    logprob_b = (base["logprob"] - shift * (base["token_id"] == 7)).astype(np.float32)
    return pd.DataFrame(
        {
            "model_a": "base",
            "model_b": model,
            **{c: base[c] for c in ("source", "prompt_set", "prompt_id", "sample", "step", "position", "segment")},
            "context_token_id": base["context_token_id"],
            "token_id": base["token_id"],
            "logprob_a": base["logprob"],
            "logprob_b": logprob_b,
            "logprob_diff": (logprob_b - base["logprob"]).astype(np.float32),
            "entropy_a": base["entropy"],
            "entropy_b": entropy_b,
            "kl_a_b": np.abs(rng.normal(shift, 0.01, n)).astype(np.float32),
            "kl_b_a": np.abs(rng.normal(2 * shift, 0.01, n)).astype(np.float32),
        }
    )


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("compare")
    own = {m: token_rows(rng, m) for m in MODELS}
    pairs = {m: pair_rows(rng, own["base"], m, 0.3 * i) for i, m in enumerate(MODELS[1:], start=1)}
    own_files, pair_files = [], []
    for m, frame in own.items():
        pq.write_table(pa.Table.from_pandas(frame, schema=TOKEN_SCHEMA, preserve_index=False), folder / f"{m}.parquet")
        own_files.append(folder / f"{m}.parquet")
    for m, frame in pairs.items():
        path = folder / f"pairs_{m}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, schema=PAIR_SCHEMA, preserve_index=False), path)
        pair_files.append(path)
    options = StatsOptions(
        boot=BootstrapOptions(n_boot=300), n_perm=500, changes=TokenChangeOptions(min_count=3, top_n=4)
    )
    tables = compare_group(own_files, pair_files, MODELS, options)
    return own, pairs, options, tables


def test_summary_points_are_exact(group):
    own, pairs, _, tables = group
    summary = tables["summary"].set_index(["tokens", "model", "metric", "statistic"])
    for model, frame in own.items():
        values = frame["entropy"].dropna().to_numpy(np.float64)
        row = summary.loc[("own generations", model, "entropy", "p90")]
        assert row["estimate"] == pytest.approx(np.quantile(values, 0.9), rel=1e-12)
        assert row["n_tokens"] == values.size and row["n_units"] == 12
        assert 0 < row["ci_resolution"] < 1e-3 * (row["ci_high"] - row["ci_low"])
        mean = summary.loc[("own generations", model, "entropy", "mean")]
        assert mean["estimate"] == pytest.approx(values.mean(), rel=1e-12) and mean["ci_resolution"] == 0
    kl = summary.loc[("base's generations", "ckpt2", "kl_b_a", "median")]
    assert kl["estimate"] == pytest.approx(np.quantile(pairs["ckpt2"]["kl_b_a"].astype(np.float64), 0.5), rel=1e-12)


def test_paired_tests_use_per_prompt_means(group):
    own, pairs, options, tables = group
    tests = tables["paired_tests"]
    per_unit = pd.DataFrame({m: f["entropy"].astype(float).groupby(f["prompt_id"]).mean() for m, f in own.items()})
    expected = paired_tests(
        per_unit, "base", MODELS[1:], n_perm=500, boot=BootstrapOptions(n_boot=300, seed=options.boot.seed)
    )
    got = tests[tests["tokens"] == "own generations"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False, rtol=1e-9)
    on_base = tests[tests["tokens"] == "base's generations"].set_index("model")
    shift = pairs["ckpt2"]["entropy_b"].astype(float) - pairs["ckpt2"]["entropy_a"].astype(float)
    assert on_base.loc["ckpt2", "mean_diff"] == pytest.approx(shift.groupby(pairs["ckpt2"]["prompt_id"]).mean().mean())


def test_trends_on_the_base_text(group):
    _, pairs, _, tables = group
    trends = tables["trends"]
    on_base = trends[trends["tokens"] == "base's generations"].set_index(["model", "measure"])
    assert on_base.loc[("base", "high_entropy_overlap"), "estimate"] == 1.0
    assert on_base.loc[("base", "share_above_base_p80"), "estimate"] == pytest.approx(0.2, abs=0.01)
    assert on_base.loc[("ckpt2", "mean_kl_model_base"), "estimate"] == pytest.approx(
        pairs["ckpt2"]["kl_b_a"].astype(float).mean()
    )
    assert 0.5 < on_base.loc[("ckpt1", "high_entropy_overlap"), "estimate"] < 1.0
    assert list(dict.fromkeys(trends["model"])) == MODELS


def test_changed_tokens_by_id_with_strings(group):
    own, pairs, options, tables = group
    by_token = tables["changed_ckpt2_by_token"]
    assert list(by_token.columns[:4]) == ["token_id", "token", "count", "n_units"]
    entropy = by_token[by_token["metric"] == "entropy_diff"]
    top = entropy.iloc[0]
    assert top["token_id"] == 4 and top["token"] == "t4" and top["direction"] == "up"
    rows = pairs["ckpt2"][pairs["ckpt2"]["token_id"] == 4]
    diff = (rows["entropy_b"] - rows["entropy_a"]).dropna()
    assert top["count"] == len(diff) and top["mean_change"] == pytest.approx(diff.astype(float).mean(), rel=1e-6)
    assert top["ci_low"] <= top["mean_change"] <= top["ci_high"]
    logprob = by_token[by_token["metric"] == "logprob_diff"]
    assert logprob[logprob["direction"] == "down"].iloc[0]["token_id"] == 7
    three = by_token[by_token["token_id"] == 3]
    assert three.empty or set(three["token"]) == {"t3"}  # the commoner string of id 3
    by_context = tables["changed_ckpt1_by_context_token"]
    assert list(by_context.columns[:4]) == ["context_token_id", "context_token", "token_id", "token"]
    assert (by_context["context_token"] == "c" + by_context["context_token_id"].astype(str)).all()
    assert (by_context["count"] >= options.changes.min_count).all()


def test_a_group_needs_two_models(group):
    from tokenscope.errors import TokenscopeError

    with pytest.raises(TokenscopeError, match="at least one other model"):
        compare_group(pd.DataFrame(), pd.DataFrame(), ["base"], StatsOptions())
