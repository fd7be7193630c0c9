"""Markers that never occur (internals.tables.run_marker_attention, figures.internals.plot_marker_attention):
the attention to them is zero by construction, which the job's log and the figure say instead of
showing an unexplained flat line."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tokenscope.figures.internals import plot_marker_attention
from tokenscope.inputs.prompts import Prompt
from tokenscope.internals.options import MarkerAttentionOptions
from tokenscope.internals.tables import TableLabels, run_marker_attention


def marker_table(tiny_loaded, markers: list[str]) -> pd.DataFrame:
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
            n_samples=1, seed=3, sampling={"do_sample": False, "max_new_tokens": 4}, batch_size=1
        ),
        show_progress=False,
    )
    return run_marker_attention(
        model,
        tokenizer,
        generations.to_pandas(),
        tokens.to_pandas(),
        TableLabels("m", "s"),
        MarkerAttentionOptions(markers=tuple(markers), batch_size=1),
        show_progress=False,
    ).to_pandas()


def marker_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "never occur" in r.message]


def test_markers_that_never_occur_are_named_in_the_log(tiny_loaded, caplog):
    with caplog.at_level(logging.WARNING, logger="tokenscope.internals.tables"):
        table = marker_table(tiny_loaded, ["<pause>", "<reflect>"])
    assert (table["n_marker_tokens"] == 0).all() and (table["marker_share"] == 0).all()
    assert marker_warnings(caplog) == [
        "marker(s) '<pause>', '<reflect>' never occur in the 1 sequence(s) of model m on prompt set s: "
        "their attention share is 0 at every step"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenscope.internals.tables"):
        marker_table(tiny_loaded, ["<think>", "<pause>"])
    assert marker_warnings(caplog) == [
        "marker(s) '<pause>' never occur in the 1 sequence(s) of model m on prompt set s"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenscope.internals.tables"):
        marker_table(tiny_loaded, ["<think>"])
    assert marker_warnings(caplog) == []


def frame(model: str, markers_seen: bool) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": model,
            "step": np.arange(5),
            "entropy": np.linspace(0.5, 1.0, 5),
            "marker_share": 0.2 if markers_seen else 0.0,
            "n_marker_tokens": 3 if markers_seen else 0,
        }
    )


def panel_notes(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[1].texts]


def test_the_figure_says_when_markers_never_occur():
    none = plot_marker_attention(pd.concat([frame("a", False), frame("b", False)]), ["<pause>"], "t", "model")
    assert panel_notes(none) == ["marker(s) <pause> never occur in these sequences"]
    some = plot_marker_attention(pd.concat([frame("a", True), frame("b", False)]), ["<pause>"], "t", "model")
    assert panel_notes(some) == ["marker(s) <pause> never occur in the sequences of b"]
    seen = plot_marker_attention(pd.concat([frame("a", True), frame("b", True)]), ["<pause>"], "t", "model")
    assert panel_notes(seen) == []
