"""Filler insertion (inputs.transforms.splice_insertion): the inserted span moves no token outside
it, on a tiny tokenizer and the embedded model's; an unknown filler token is refused."""

from __future__ import annotations

import pytest

from tokenscope.errors import ConfigError
from tokenscope.inputs.chat import generation_prompt_ids
from tokenscope.inputs.prompts import Insertion, load_prompt_set
from tokenscope.inputs.transforms import splice_insertion

from helpers.paths import REPO
from helpers.tiny_models import build_tokenizer

TOKENIZERS = {"tiny": lambda embedded: build_tokenizer(), "embedded": lambda embedded: embedded[1]}


@pytest.mark.parametrize("which", ["tiny", "embedded"])
@pytest.mark.parametrize("place", ["after_system", "before_question", "before_answer"])
@pytest.mark.parametrize("filler", [{"text": " ..."}, {"token": "<|im_start|>"}])
def test_filler_moves_no_token_outside_its_span(embedded, which, place, filler):
    tokenizer = TOKENIZERS[which](embedded)
    insertion = Insertion(count=7, place=place, **filler)
    for prompt in load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl"):
        messages = (
            prompt.messages
            if place != "after_system"
            else ({"role": "system", "content": "Be brief."}, *prompt.messages)
        )
        original = generation_prompt_ids(tokenizer, messages)
        ids, (start, end) = splice_insertion(tokenizer, messages, insertion, original)
        assert ids[:start] == original[:start] and ids[end:] == original[start:]
        unit = 1 if "token" in filler else len(tokenizer(" ...", add_special_tokens=False)["input_ids"])
        assert end - start == 7 * unit
        if place == "before_answer":
            assert start == len(original)
        if place == "before_question":
            assert tokenizer.decode(ids[end:]).lstrip().startswith(messages[-1]["content"][:10])


def test_unknown_filler_token_is_refused():
    tokenizer = build_tokenizer()
    messages = ({"role": "user", "content": "What is 2 + 2?"},)
    with pytest.raises(ConfigError, match="not one token"):
        splice_insertion(
            tokenizer, messages, Insertion(count=2, token="<pause>"), generation_prompt_ids(tokenizer, messages)
        )
