"""Chat templates -> token ids, for generation prompts and teacher-forced answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

from tokenscope.errors import ModelError

if TYPE_CHECKING:
    from tokenscope.model.types import Tokenizer

ScoreSpan = Literal["answer", "all"]


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """The chat as text: the tokenizer's chat template, or for base models the turns joined."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return cast(str, text)
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
