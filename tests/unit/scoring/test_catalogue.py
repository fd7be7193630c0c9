"""The metric catalogue: what is derived from it, and docs/schema.md documenting exactly its columns."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from tokenscope.errors import ConfigError
from tokenscope.report import side_by_side, token_view
from tokenscope.scoring.catalogue import (
    GENERATED_FIELDS,
    METRICS,
    PAIR_METRICS,
    TOKEN_METRICS,
    Metric,
    check_config_metrics,
    config_metric_keys,
)
from tokenscope.scoring.formulas import PairMetrics, TokenMetrics, divergence_from_logits, metrics_from_logits
from tokenscope.scoring.tables import PAIR_ALTERNATIVES_SCHEMA, PAIR_SCHEMA, TOKEN_SCHEMA

SCHEMA_DOC = Path(__file__).resolve().parents[3] / "docs" / "schema.md"


def documented_columns(heading: str) -> dict[str, tuple[str, str]]:
    """column -> (type, unit) of the table under the docs/schema.md section starting with `heading`."""
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}", 1)[1].split("\n## ", 1)[0]
    columns = {}
    table = section.split("| column | type | unit | meaning |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        name_cell, type_cell, unit_cell = (cell.strip() for cell in line.strip("|").split("|")[:3])
        for name in re.findall(r"`([^`]+)`", name_cell):
            columns[name] = (type_cell, unit_cell)
    return columns


def documented_type(metric: Metric) -> str:
    value = {"float": "float32"}.get(str(metric.value_type), str(metric.value_type))
    text = f"list<{value}>" if metric.per_alternative else value
    return f"{text} (null)" if metric.nullable else text


@pytest.mark.parametrize(
    ("heading", "metrics"),
    [("## Per-token table", TOKEN_METRICS), ("## Pair table", PAIR_METRICS)],
)
def test_schema_doc_documents_exactly_the_catalogue_columns_with_their_units(heading, metrics):
    documented = documented_columns(heading)
    with_units = {name: type_unit for name, type_unit in documented.items() if type_unit[1]}
    assert set(with_units) == {m.name for m in metrics}
    for metric in metrics:
        assert with_units[metric.name] == (documented_type(metric), metric.unit), metric.name


def test_table_schemas_carry_the_catalogue_columns_in_order():
    def metric_fields(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
        names = {m.name for m in METRICS}
        return [(f.name, f.type) for f in schema if f.name in names]

    assert metric_fields(TOKEN_SCHEMA) == [(m.name, m.arrow_type) for m in TOKEN_METRICS]
    assert metric_fields(PAIR_SCHEMA) == [(m.name, m.arrow_type) for m in PAIR_METRICS if not m.with_alternatives]
    assert metric_fields(PAIR_ALTERNATIVES_SCHEMA) == [(m.name, m.arrow_type) for m in PAIR_METRICS]


def test_every_column_is_written_from_an_attribute_of_the_scored_metrics():
    logits = torch.randn(3, 11)
    targets = torch.tensor([0, 4, 10])
    token = metrics_from_logits(logits, targets, 2)
    token.sampling_entropy = token.tempered_entropy = torch.zeros(3)
    pair = divergence_from_logits(logits, torch.randn(3, 11), targets)
    for metric in TOKEN_METRICS:
        values = getattr(token, metric.field)
        assert values.shape[:1] == (3,), metric.name
        assert values.dim() == (2 if metric.per_alternative else 1), metric.name
    for metric in PAIR_METRICS:
        if not metric.with_alternatives:
            assert getattr(pair, metric.field).shape == (3,), metric.name


def test_the_decode_loop_records_every_token_metrics_field():
    assert [f.name for f in GENERATED_FIELDS] == [
        "entropy",
        "logprob",
        "rank",
        "varentropy",
        "margin",
        "sampling_entropy",
        "tempered_entropy",
        "topk_ids",
        "topk_logprobs",
    ]
    assert {f.name for f in GENERATED_FIELDS} == {f.name for f in fields(TokenMetrics)}
    assert {f.name for f in fields(PairMetrics)} <= {m.field for m in PAIR_METRICS}


def test_page_metrics_come_from_the_catalogue():
    assert token_view.TOKEN_METRICS == {
        "entropy": "entropy",
        "surprisal": "-logprob",
        "varentropy": "varentropy",
        "margin": "margin",
    }
    assert side_by_side.METRIC_KEYS == ("logprob_diff", "kl_a_b", "kl_b_a")
    assert side_by_side.DIVERGING_KEYS == {"logprob_diff"}
    labels = side_by_side.metric_labels(side_by_side.PairContext("base", "sft", "math", "base"))
    assert labels["kl_a_b"][0] == "KL(base ‖ sft)"
    assert labels["logprob_diff"][0] == "log p(sft) − log p(base)"


def test_config_metric_keys_are_the_catalogue_s():
    keys = config_metric_keys()
    assert keys["analysis.qcut_metric"] == (
        "entropy",
        "logprob",
        "prob",
        "rank",
        "varentropy",
        "margin",
        "sampling_entropy",
        "tempered_entropy",
    )
    assert keys["token_view.metric"] == ("entropy", "surprisal", "varentropy", "margin", "kl")
    assert keys["side_by_side.metric"] == ("logprob_diff", "kl_a_b", "kl_b_a")
    check_config_metrics({"analysis": {"qcut_metric": "margin"}, "token_view": {"metric": "kl"}})
    with pytest.raises(ConfigError, match=r"^invalid config at analysis.qcut_metric: 'topk_ids' is not one of"):
        check_config_metrics({"analysis": {"qcut_metric": "topk_ids"}})
    with pytest.raises(ConfigError, match=r"^invalid config at side_by_side.metric: 'kl'"):
        check_config_metrics({"side_by_side": {"metric": "kl"}})
