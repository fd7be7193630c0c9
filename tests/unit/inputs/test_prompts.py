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
            json.dumps({"id": "d", "messages": [{"role": "user", "content": "x"}], "answer": "y"}),
            "line 2: unknown key(s) ['answer']",
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
