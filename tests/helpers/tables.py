"""Comparing two runs' tables: exact for ids, integers and strings, float columns within a
tolerance, and the columns that order tokens by probability exact up to near-ties."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The same sequence decoded beside other rows (another shard size, so other batches) gets float32
# logits whose sums differ in the last bits. Measured on 114,105 tokens of a tiny Llama, 512-token
# sequences, shard_size 512 against 10 and 48: 65% of the values differ, by at most 7.9e-6 nats in
# entropy (2.4e-6 relative), 1.3e-5 in logprob (4.2e-6 relative), 1.5e-6 in prob; 1e-6 would not hold.
RTOL = ATOL = 1e-5
# Columns that are a difference of two such values (margin: logprob of the top-1 minus the top-2)
# carry both errors: measured up to 1.9e-5 on the same runs (3 of 114,105 tokens above 1e-5).
TOLERANCE_FACTOR = {"margin": 2.0}
# Where two logits are within that rounding, their order can flip: `rank` (1 + tokens with a larger
# logit) then differs by one, and two alternatives of `topk_*` swap (or, last in the list, the
# k-th and (k+1)-th). Measured (same runs): 3 ranks and 4 alternative lists of 114,105 tokens.
TIE_ORDERED = ("rank", "topk_ids", "topk_pieces")
MAX_RANK_TIES = 1e-4  # the fraction of rows whose rank may differ (by one)


def sort_rows(table: pa.Table) -> pa.Table:
    """Rows in (prompt_id, sample[, step]) order: the key of a generation or a token."""
    keys = [key for key in ("prompt_id", "sample", "step") if key in table.column_names]
    return table.sort_by([(key, "ascending") for key in keys])


def _is_float(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or (pa.types.is_list(kind) and pa.types.is_floating(kind.value_type))


def _numpy(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _tied_alternatives(probs: pa.ListArray) -> np.ndarray:
    """Per flattened alternative: its probability is within tolerance of a neighbour's in its list,
    or it is the last of its list (its neighbour, the next alternative, is not recorded)."""
    values, rows = _numpy(pc.list_flatten(probs)), _numpy(pc.list_parent_indices(probs))
    close = np.isclose(values[1:], values[:-1], rtol=RTOL, atol=ATOL) & (rows[1:] == rows[:-1])
    tied = np.zeros(len(values), dtype=bool)
    tied[1:] |= close
    tied[:-1] |= close
    tied[:-1] |= rows[1:] != rows[:-1]
    if len(values):
        tied[-1] = True
    return tied


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    """Same schema (metadata included) and rows (sorted by key): columns exactly equal, but float
    columns (and lists of floats, of the same lengths) within RTOL and ATOL, and TIE_ORDERED
    columns equal but at near-ties."""
    assert a.schema.equals(b.schema, check_metadata=True), (a.schema, b.schema)
    assert a.num_rows == b.num_rows
    a, b = sort_rows(a), sort_rows(b)
    columns = {name: (a[name].combine_chunks(), b[name].combine_chunks()) for name in a.column_names}
    for name, (x, y) in columns.items():
        if name in TIE_ORDERED and not x.equals(y):
            if name == "rank":
                differ = _numpy(x) != _numpy(y)
                assert np.abs(_numpy(x) - _numpy(y)).max() == 1, name
                assert differ.mean() <= MAX_RANK_TIES, (name, int(differ.sum()))
                continue
            assert pc.list_value_length(x).equals(pc.list_value_length(y)), name
            differ = _numpy(pc.list_flatten(x)) != _numpy(pc.list_flatten(y))
            tied = _tied_alternatives(columns["topk_probs"][0]) & _tied_alternatives(columns["topk_probs"][1])
            assert not (differ & ~tied).any(), (name, np.flatnonzero(differ & ~tied)[:10])
            continue
        if not _is_float(x.type):
            assert x.equals(y), name
            continue
        if pa.types.is_list(x.type):
            assert pc.list_value_length(x).equals(pc.list_value_length(y)), name
            x, y = pc.list_flatten(x), pc.list_flatten(y)
        factor = TOLERANCE_FACTOR.get(name, 1.0)
        np.testing.assert_allclose(_numpy(x), _numpy(y), factor * RTOL, factor * ATOL, err_msg=name)
