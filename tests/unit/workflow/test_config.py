"""One-line config messages (workflow.config.config_error_message) from schema violations."""

from __future__ import annotations

import pytest
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tokenscope.workflow.config import config_error_message

from helpers.paths import REPO

SCHEMA = str(REPO / "schemas" / "config.schema.yaml")


def message(extra: dict) -> str | None:
    config = {"models": {"m": {"hub": "org/m"}}, "prompt_sets": {"p": "prompts/p.jsonl"}, **extra}
    try:
        validate(config, SCHEMA, set_default=True)
    except WorkflowError as error:
        return config_error_message(error)
    return None


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:7", "cuda:15"])
def test_documented_devices_pass(device):
    assert message({"runtime": {"device": device}}) is None


@pytest.mark.parametrize("device", ["banana", "gpu", "CUDA", "cuda:", "cuda:one", "cuda:0,1", " cpu", "mps:0"])
def test_other_devices_name_the_key_and_the_values(device):
    assert message({"runtime": {"device": device}}) == (
        f"invalid config at runtime.device: {device!r} is not auto, cpu, mps, cuda or cuda:N"
        " (N: a GPU index; auto: cuda when present, else cpu)"
    )


def test_a_name_pattern_keeps_the_schema_message():
    """Patterns without a description (model names) keep jsonschema's wording."""
    assert message({"models": {"bad name": {"hub": "org/m"}}}) == (
        "invalid config at models: 'bad name' does not match '^[A-Za-z0-9][A-Za-z0-9_.-]*$'"
    )
