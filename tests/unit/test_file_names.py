"""Prompt ids -> file names (io.safe_file_name): readable, unchanged for ordinary ids, and injective,
so that ids differing only in characters a file name cannot carry do not overwrite each other's
token-view pages and figures."""

from __future__ import annotations

import re

import pytest

from tokenscope.io import safe_file_name
from tokenscope.report.pages import ViewInputs
from tokenscope.report.token_view import TokenRows, page_file_name, write_token_views


@pytest.mark.parametrize("prompt_id", ["math01", "a_b", "math-24.v2", "x", "Größe", "中文"])
def test_ordinary_ids_keep_their_names(prompt_id):
    assert safe_file_name(prompt_id) == prompt_id


def test_ordinary_page_names_do_not_change():
    assert page_file_name("math01", 0) == "math01-0.html"
    assert page_file_name("a_b", 3) == "a_b-3.html"


def test_ids_that_need_escaping_get_distinct_readable_names():
    ids = ["a/b", "a_b", "a:b", "a b", "a~b", "a\\b", "a_b~1", "../a_b"]
    names = [safe_file_name(i) for i in ids]
    assert len(set(names)) == len(ids), dict(zip(ids, names, strict=True))
    for prompt_id, name in zip(ids, names, strict=True):
        assert re.fullmatch(r"[\w.\-~]+", name), name
        assert "/" not in name and "\\" not in name
        if prompt_id != "a_b":
            # the readable safe name, then '~' and 8 hex digits of the id's sha256
            assert re.fullmatch(r"[\w.\-]+~[0-9a-f]{8}", name), name
    assert safe_file_name("a/b").startswith("a_b~")
    assert safe_file_name("a/b") == safe_file_name("a/b")  # the same on every run


def test_pages_of_ids_differing_only_in_escaped_characters_do_not_overwrite_each_other(tmp_path):
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from tokenscope.model.token_text import VocabularyStrings
    from tokenscope.report.token_view import PageContext

    from helpers.pages import page_data
    from helpers.tiny_models import build_tokenizer

    ids = ["a/b", "a_b", "a:b"]
    frame = pd.DataFrame(
        {
            "prompt_id": np.repeat(ids, 2),
            "sample": 0,
            "step": np.tile([0, 1], 3),
            "position": np.tile([5, 6], 3),
            "token": ["x", "y"] * 3,
            "token_id": np.tile([10, 11], 3),
            "entropy": 0.5,
            "varentropy": 0.3,
            "margin": 1.0,
            "logprob": -0.2,
            "prob": 0.8,
            "rank": 1,
        }
    )
    topk_ids = pa.array([[10, 11]] * 6, type=pa.list_(pa.int32()))
    topk_probs = pa.array([[0.8, 0.1]] * 6, type=pa.list_(pa.float32()))
    vocab = VocabularyStrings.from_tokenizer(build_tokenizer())
    paths = write_token_views(
        TokenRows(frame, topk_ids, topk_probs), tmp_path, PageContext("m", "set", "m"), ViewInputs(vocab)
    )
    assert len(paths) == 3 and len(set(paths)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(page_file_name(i, 0) for i in ids)
    assert sorted(page_data(p)["prompt_id"] for p in paths) == sorted(ids)
