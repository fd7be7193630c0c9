"""Internals tables (internals.tables): probe tables on a prompt set derived by inserting filler,
and the marker-attention table aligned with the generated tokens."""

from __future__ import annotations

import numpy as np

from tokenscope.inputs.prompts import Prompt, load_prompt_set
from tokenscope.internals.options import AttentionPositionsOptions, DepthOptions, MarkerAttentionOptions
from tokenscope.internals.tables import (
    TableLabels,
    probe_sequences,
    run_attention_positions,
    run_depth,
    run_marker_attention,
)

from helpers.paths import REPO


def test_probe_tables_on_a_derived_prompt_set(tiny_loaded):
    model, tokenizer = tiny_loaded("qwen2")
    path = REPO / "tests" / "data" / "tiny_a.jsonl"
    plain = load_prompt_set(path)
    filler = load_prompt_set(path, {"text": " ...", "count": 3, "place": "before_question"})
    options = AttentionPositionsOptions(heads=((0, 0), (1, 2)))
    with_table = run_attention_positions(model, tokenizer, filler, TableLabels("m", "f"), options).to_pandas()
    without_table = run_attention_positions(model, tokenizer, plain, TableLabels("m", "p"), options).to_pandas()
    # Outside the span the tokens line up with the source set's tokens at source_position.
    outside = with_table[~with_table["in_span"]].merge(
        without_table,
        left_on=["prompt_id", "layer", "head", "source_position"],
        right_on=["prompt_id", "layer", "head", "position"],
        suffixes=("", "_src"),
    )
    assert len(outside) == len(without_table)
    assert (outside["token"] == outside["token_src"]).all()
    assert (with_table.loc[with_table["in_span"], "source_position"] == -1).all()
    convergence, lens = run_depth(model, tokenizer, filler, TableLabels("m", "f"), DepthOptions(prompt_ids=("add",)))
    convergence, lens = convergence.to_pandas(), lens.to_pandas()
    sequence = probe_sequences(tokenizer, filler, ["add"])[0]
    assert len(lens) == len(convergence) == (model.config.num_hidden_layers + 1) * len(sequence.token_ids)
    assert (convergence.loc[convergence["depth"] == convergence["depth"].max(), "distance"] == 0).all()
    assert lens["in_span"].sum() == (model.config.num_hidden_layers + 1) * 3 * len(
        tokenizer(" ...", add_special_tokens=False)["input_ids"]
    )


def test_marker_attention_table_aligns_with_generated_tokens(tiny_loaded):
    from tokenscope.generation.options import GenerationOptions
    from tokenscope.generation.run import run_generation

    model, tokenizer = tiny_loaded("llama")
    prompts = [Prompt("p", ({"role": "user", "content": "<think> 17 + 25 </think> What is 2 + 2?"},))]
    generations, tokens = run_generation(
        model,
        tokenizer,
        prompts,
        model_name="m",
        prompt_set="s",
        options=GenerationOptions(
            n_samples=2, seed=3, sampling={"do_sample": True, "temperature": 1.0, "max_new_tokens": 9}, batch_size=2
        ),
        show_progress=False,
    )
    table = run_marker_attention(
        model,
        tokenizer,
        generations.to_pandas(),
        tokens.to_pandas(),
        TableLabels("m", "s"),
        MarkerAttentionOptions(markers=("<think>",), batch_size=1),
        show_progress=False,
    ).to_pandas()
    tokens = tokens.to_pandas()
    assert len(table) == len(tokens)
    merged = table.merge(tokens, on=["prompt_id", "sample", "step"], suffixes=("", "_tok"))
    assert (merged["position"] == merged["position_tok"]).all() and (merged["token"] == merged["token_tok"]).all()
    np.testing.assert_allclose(merged["entropy"], merged["entropy_tok"])
    assert (table["n_marker_tokens"] >= 2).all()  # "<think>" spans several tokens of this tokenizer
    assert table["marker_share"].between(0, 1).all()
