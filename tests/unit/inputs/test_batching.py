"""Grouping sequences of similar length so that padding stays bounded, and the id that pads them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tokenscope.errors import ModelError
from tokenscope.inputs.batching import pad_id_of, padding_bounded_groups


@pytest.mark.parametrize("max_padding,max_tokens", [(0.1, 8192), (0.0, 8192), (0.5, 300), (0.1, 1)])
def test_groups_cover_every_sequence_once_longest_first_within_both_bounds(max_padding, max_tokens):
    lengths = np.random.default_rng(0).integers(1, 240, size=200)
    groups = padding_bounded_groups(lengths, max_padding, max_tokens)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    flat = np.concatenate(groups)
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first, within and across groups
    for group in groups:
        padded, real = len(group) * lengths[group].max(), lengths[group].sum()
        if len(group) > 1:  # a group of one never pads
            assert padded <= (1 + max_padding) * real and padded <= max_tokens


def test_equal_lengths_share_one_group_and_outliers_stand_alone():
    groups = padding_bounded_groups([100, 10, 100, 100, 12], max_padding=0.1, max_tokens=8192)
    assert [g.tolist() for g in groups] == [[0, 2, 3], [4, 1]]
    assert [g.tolist() for g in padding_bounded_groups([100, 100, 100], 0.1, max_tokens=250)] == [[0, 1], [2]]


def test_pad_id_is_the_pad_token_else_the_end_of_sequence_token():
    assert pad_id_of(SimpleNamespace(pad_token_id=3, eos_token_id=7, name_or_path="m")) == 3
    assert pad_id_of(SimpleNamespace(pad_token_id=None, eos_token_id=7, name_or_path="m")) == 7


def test_a_tokenizer_without_pad_or_end_of_sequence_token_is_one_line_naming_it():
    tokenizer = SimpleNamespace(pad_token_id=None, eos_token_id=None, name_or_path="org/tiny-model")
    with pytest.raises(ModelError) as caught:
        pad_id_of(tokenizer)
    message = str(caught.value)
    assert message.startswith("tokenizer org/tiny-model has neither a pad nor an end-of-sequence token")
    assert "\n" not in message
