"""The internals passes refuse a prompt longer than the model's positions, naming it, before any forward."""

from __future__ import annotations

import pytest

from tokenscope.errors import ConfigError
from tokenscope.internals.tables import TableLabels, run_attention_positions, run_depth

from helpers.prompts import make_prompts


def test_overlong_probe_sequences_are_refused_naming_the_prompt(tiny_loaded, monkeypatch):
    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts(1)
    monkeypatch.setattr(model.config, "max_position_embeddings", 8)
    with pytest.raises(ConfigError, match=r"prompt '.+': \d+ tokens .* exceed the 8 positions of model 'tiny'"):
        run_depth(model, tokenizer, prompts, TableLabels("tiny", "s"))
    with pytest.raises(ConfigError, match="exceed the 8 positions of model 'tiny'"):
        run_attention_positions(model, tokenizer, prompts, TableLabels("tiny", "s"))
