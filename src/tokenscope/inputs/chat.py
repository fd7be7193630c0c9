"""Chat templates -> token ids, for generation prompts and teacher-forced answers."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from tokenscope.errors import ModelError

if TYPE_CHECKING:
    from tokenscope.model.types import Tokenizer

ScoreSpan = Literal["answer", "all"]

log = logging.getLogger(__name__)
# Tokenizers already warned about in this process (the fallback is used once per chat).
_warned: weakref.WeakSet[Any] = weakref.WeakSet()
_warned_ids: set[int] = set()  # tokenizers that take no weak reference


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _warn_no_chat_template(tokenizer: Tokenizer) -> None:
    """Log, once per tokenizer, that its chats are plain concatenations of the messages."""
    try:
        if tokenizer in _warned:
            return
        _warned.add(tokenizer)
    except TypeError:
        if id(tokenizer) in _warned_ids:
            return
        _warned_ids.add(id(tokenizer))
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    log.warning(
        "tokenizer %s has no chat template: each chat is its messages' contents joined by blank lines, without roles",
        name,
    )


def prepared_chat_template(model_dir: str | Path) -> bool:
    """Whether the tokenizer files in `model_dir` define a chat template (read without loading them).

    transformers keeps it in chat_template.jinja, or (older folders) under "chat_template" in
    chat_template.json or tokenizer_config.json, a string or a list of named templates.
    """
    folder = Path(model_dir)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file() and jinja.read_text(encoding="utf-8").strip():
        return True
    if (folder / "additional_chat_templates").is_dir() and any((folder / "additional_chat_templates").iterdir()):
        return True
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            settings = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(settings, dict) and settings.get("chat_template"):
                return True
    return False


def render_chat(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """The chat as text: the tokenizer's chat template, or for base models the turns joined."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return cast(str, text)
    _warn_no_chat_template(tokenizer)
    return "\n\n".join(m["content"] for m in messages) + ("\n\n" if add_generation_prompt else "")


def template_ids(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    if has_chat_template(tokenizer):
        ids = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
        return [int(i) for i in cast("list[int]", ids)]
    # Base models without a chat template: plain concatenation of the turns (with the BOS token).
    text = render_chat(tokenizer, messages, add_generation_prompt)
    return [int(i) for i in tokenizer(text)["input_ids"]]


def generation_prompt_ids(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    """The chat with the assistant generation prompt appended."""
    return template_ids(tokenizer, messages, add_generation_prompt=True)


def teacher_forced_ids(
    tokenizer: Tokenizer, messages: Sequence[dict[str, str]], answer: str, span: ScoreSpan = "answer"
) -> tuple[list[int], int, int]:
    """Token ids of the chat with `answer` as the assistant turn.

    Returns (ids, score_start, prompt_length): tokens at positions >= score_start are scored.
    `answer` scores the assistant span only; `all` scores every token after the first (prompt and
    answer alike).
    """
    prompt = template_ids(tokenizer, messages, add_generation_prompt=True)
    full = template_ids(tokenizer, [*messages, {"role": "assistant", "content": answer}], add_generation_prompt=False)
    # Templates may re-tokenize at the boundary; the answer starts where the two first differ.
    common = next(
        (i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), min(len(prompt), len(full))
    )
    if common >= len(full):
        raise ModelError("the chat template dropped the assistant answer")
    return full, (common if span == "answer" else 1), common
