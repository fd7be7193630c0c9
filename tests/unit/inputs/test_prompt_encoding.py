"""A prompt set that is not UTF-8 text gets one PromptSetError naming the file and the line, not a
UnicodeDecodeError traceback; a byte-order mark and Windows line ends are read as usual."""

from __future__ import annotations

import json

import pytest

from tokenscope.errors import PromptSetError
from tokenscope.inputs.prompts import load_prompt_set

GOOD = json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]})


def test_non_utf8_line_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad = json.dumps({"id": "b", "messages": [{"role": "user", "content": "café"}]}, ensure_ascii=False)
    path.write_bytes(GOOD.encode() + b"\n\n" + bad.encode("latin-1") + b"\n")
    with pytest.raises(PromptSetError) as error:
        load_prompt_set(path)
    message = str(error.value)
    assert message.startswith(f"{path}, line 3: not UTF-8 text")
    assert "0xe9" in message and "\n" not in message


def test_byte_order_mark_and_crlf_are_read(tmp_path):
    path = tmp_path / "windows.jsonl"
    second = json.dumps({"id": "b", "messages": [{"role": "user", "content": "é"}]}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n" + second.encode() + b"\r\n")
    prompts = load_prompt_set(path)
    assert [p.id for p in prompts] == ["a", "b"] and prompts[1].messages[0]["content"] == "é"
