"""Prompt sets (inputs.prompts.load_prompt_set): a bad line gets one clear error naming the file and
the line; an empty set is refused."""

from __future__ import annotations

import json

import pytest

from tokenscope.errors import PromptSetError
from tokenscope.inputs.prompts import load_prompt_set


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2: invalid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "line 2: missing key 'id'"),
        (
            json.dumps({"id": "a", "messages": [{"role": "user", "content": "x"}]}),
            "line 2: duplicate id 'a' (first on line 1)",
        ),
        (
            json.dumps({"id": "b", "messages": [{"role": "robot", "content": "x"}]}),
            "line 2: messages[0].role must be one of",
        ),
        (json.dumps({"id": "c", "messages": []}), "line 2: 'messages' must be a non-empty list"),
        (
            json.dumps({"id": "d", "messages": [{"role": "user", "content": "x"}], "answers": "y"}),
            "line 2: unknown key(s) ['answers']; allowed: id, messages, reference, answer, metadata",
        ),
        (
            json.dumps({"id": "e", "messages": [{"role": "user", "content": "x"}], "answer": [1, 2]}),
            "line 2: prompt 'e': 'answer' must be a string or a number, got list [1, 2]",
        ),
        (
            json.dumps({"id": 7, "messages": [{"role": "user", "content": "x"}], "answer": True}),
            "line 2: prompt '7': 'answer' must be a string or a number, got bool true",
        ),
        (
            json.dumps({"id": "g", "messages": [{"role": "user", "content": "x"}], "answer": {"value": 3}}),
            "line 2: prompt 'g': 'answer' must be a string or a number, got dict",
        ),
        (
            '{"id": "h", "messages": [{"role": "user", "content": "x"}], "answer": NaN}',
            "line 2: prompt 'h': 'answer' must be a finite number",
        ),
        (
            json.dumps({"id": "i", "messages": [{"role": "user", "content": "x"}], "answer": " "}),
            "line 2: prompt 'i': 'answer' must be a non-empty string or a number",
        ),
    ],
)
def test_prompt_set_errors_name_file_and_line(tmp_path, line, expected):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n" + line + "\n")
    with pytest.raises(PromptSetError) as error:
        load_prompt_set(path)
    assert str(error.value).startswith(f"{path}, ") and expected in str(error.value)


def test_empty_prompt_set_is_refused(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(PromptSetError, match="prompt set is empty"):
        load_prompt_set(path)


def test_answers_are_text_and_numbers_keep_their_json_text(tmp_path):
    path = tmp_path / "set.jsonl"
    lines = [
        '{"id": "a", "messages": [{"role": "user", "content": "x"}], "answer": "\\\\frac{1}{2}"}',
        '{"id": "b", "messages": [{"role": "user", "content": "x"}], "answer": 0.50}',
        '{"id": "c", "messages": [{"role": "user", "content": "x"}], "answer": -12}',
        '{"id": "d", "messages": [{"role": "user", "content": "x"}], "answer": 2.5e3}',
        '{"id": "e", "messages": [{"role": "user", "content": "x"}], "answer": null, "metadata": {"n": 1.0}}',
        '{"id": "f", "messages": [{"role": "user", "content": "x"}]}',
    ]
    path.write_text("\n".join(lines) + "\n")
    prompts = load_prompt_set(path)
    assert [p.answer for p in prompts] == ["\\frac{1}{2}", "0.50", "-12", "2.5e3", None, None]
    assert prompts[4].metadata == {"n": 1.0}  # other numbers are read as numbers
