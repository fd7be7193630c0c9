"""A tokenizer without a chat template (inputs.chat): prompts fall back to the turns joined by blank
lines, with a warning in the job's log once per tokenizer; a prepared model folder says whether its
tokenizer has one (inputs.chat.prepared_chat_template), for the run record."""

from __future__ import annotations

import json
import logging

from tokenscope.inputs.chat import generation_prompt_ids, prepared_chat_template, teacher_forced_ids

from helpers.tiny_models import build_tokenizer

MESSAGES = ({"role": "user", "content": "What is 2 + 2?"},)


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "chat template" in r.message]


def test_no_chat_template_warns_once_per_tokenizer(caplog):
    plain = build_tokenizer()
    plain.chat_template = None
    plain.name_or_path = "base-model"
    other = build_tokenizer()
    other.chat_template = None
    with caplog.at_level(logging.WARNING, logger="tokenscope.inputs.chat"):
        ids = generation_prompt_ids(plain, MESSAGES)
        generation_prompt_ids(plain, MESSAGES)
        teacher_forced_ids(plain, MESSAGES, "4")
        assert fallback_warnings(caplog) == [
            "tokenizer base-model has no chat template: each chat is its messages' contents joined by "
            "blank lines, without roles"
        ]
        generation_prompt_ids(other, MESSAGES)
        assert len(fallback_warnings(caplog)) == 2  # once per tokenizer
    assert plain.decode(ids).endswith("What is 2 + 2?\n\n")


def test_a_chat_template_gives_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tokenscope.inputs.chat"):
        generation_prompt_ids(build_tokenizer(), MESSAGES)
    assert fallback_warnings(caplog) == []


def test_prepared_chat_template_reads_the_tokenizer_files(tmp_path):
    with_template = tmp_path / "chat"
    build_tokenizer().save_pretrained(with_template)
    assert prepared_chat_template(with_template) is True
    plain = build_tokenizer()
    plain.chat_template = None
    without = tmp_path / "base"
    plain.save_pretrained(without)
    assert prepared_chat_template(without) is False
    # Older tokenizer folders keep the template in tokenizer_config.json
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert prepared_chat_template(legacy) is True
    (legacy / "tokenizer_config.json").write_text(json.dumps({"chat_template": None}))
    assert prepared_chat_template(legacy) is False
    named = tmp_path / "named"
    named.mkdir()
    (named / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "{{ messages }}"}]})
    )
    assert prepared_chat_template(named) is True
