"""Prompt transforms on token ids: insert filler or pause tokens at a place of the chat.

The place is found on the rendered chat text and mapped to a token boundary with the
tokenizer's offsets, then the filler ids are spliced in. Every token outside the inserted span
is the one the untransformed prompt has, so with/without sequences align exactly:
position p < start is the same token, position p >= end is token p - (end - start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from tokenscope.errors import ConfigError
from tokenscope.inputs.chat import has_chat_template, render_chat, template_ids
from tokenscope.inputs.prompts import Insertion

if TYPE_CHECKING:
    from tokenscope.model.types import Tokenizer

Span = tuple[int, int]


def filler_ids(tokenizer: Tokenizer, insertion: Insertion) -> list[int]:
    """The ids inserted: `count` repetitions of the text's ids, or of the single token."""
    if insertion.token is not None:
        token_id = cast("int | None", tokenizer.convert_tokens_to_ids(insertion.token))  # one token: one id
        if token_id is None or (token_id == tokenizer.unk_token_id and insertion.token != tokenizer.unk_token):
            raise ConfigError(f"insert.token {insertion.token!r} is not one token of this tokenizer's vocabulary")
        unit = [int(token_id)]
    else:
        unit = [int(i) for i in tokenizer(insertion.text, add_special_tokens=False)["input_ids"]]
        if not unit:
            raise ConfigError(f"insert.text {insertion.text!r} tokenizes to no tokens")
    return unit * insertion.count


def _place_char(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], place: str, text: str) -> int:
    if place == "before_answer":
        return len(text)
    if place == "after_system":
        if messages[0]["role"] != "system":
            raise ConfigError("insert.place 'after_system' needs prompts whose first message is a system message")
        system_text = render_chat(tokenizer, messages[:1], add_generation_prompt=False)
        if not text.startswith(system_text):
            raise ConfigError("the chat template renders the system turn differently on its own; use another place")
        return len(system_text)
    # before_question: where the content of the last user message starts.
    user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if user is None or not user["content"]:
        raise ConfigError("insert.place 'before_question' needs a non-empty user message")
    found = text.rfind(user["content"])
    if found < 0:
        raise ConfigError("the chat template does not render the user message verbatim; use another place")
    return found


def insertion_index(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], place: str, ids: Sequence[int]) -> int:
    """Index in `ids` (the generation prompt's token ids) where the place's token boundary is."""
    if place == "before_answer":
        return len(ids)
    text = render_chat(tokenizer, messages, add_generation_prompt=True)
    char = _place_char(tokenizer, messages, place, text)
    # Chat templates tokenize their text without adding special tokens; plain joins add BOS.
    encoded = tokenizer(text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True)
    if list(encoded["input_ids"]) != list(ids):
        raise ConfigError("the rendered chat text does not re-tokenize to the prompt's ids; use place 'before_answer'")
    starts = np.array([start for start, _ in encoded["offset_mapping"]], dtype=np.int64)
    # First token starting at or after the place; a token straddling it is kept whole before it.
    return int(np.searchsorted(starts, char, side="left"))


def splice_insertion(
    tokenizer: Tokenizer, messages: Sequence[dict[str, str]], insertion: Insertion | None, ids: Sequence[int]
) -> tuple[list[int], Span | None]:
    """Apply `insertion` to `ids`, a sequence that starts with the chat's generation prompt
    (the prompt alone, or prompt + teacher-forced answer). Returns the new ids and the inserted
    span [start, end)."""
    if insertion is None:
        return list(ids), None
    prompt_ids = template_ids(tokenizer, messages, add_generation_prompt=True)
    index = insertion_index(tokenizer, messages, insertion.place, prompt_ids)
    if list(ids[:index]) != prompt_ids[:index]:
        raise ConfigError("the sequence does not start with the chat's generation prompt")
    filler = filler_ids(tokenizer, insertion)
    return [*ids[:index], *filler, *ids[index:]], (index, index + len(filler))
