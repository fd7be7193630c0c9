"""Options objects: built from the config, params of the settings that change results, and the
one default of each setting (the config schema's default agrees with the field's)."""

from __future__ import annotations

import importlib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenscope.options import SectionOptions, setting

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
# The modules that define the options objects of the config sections.
OPTION_MODULES = [
    "tokenscope.options",
    "tokenscope.generation.options",
    "tokenscope.scoring.options",
    "tokenscope.internals.options",
    "tokenscope.report.options",
]


@dataclass(frozen=True)
class _Example(SectionOptions):
    seed: int = setting("generation.seed", 0)
    batch_size: int = setting("generation.batch_size", 16, changes_results=False)
    markers: tuple[str, ...] = setting("internals.marker_attention.markers", ("<think>",))


CONFIG = {
    "generation": {"seed": 3, "batch_size": 64},
    "internals": {"marker_attention": {"markers": ["<think>", "</think>"]}},
}


def test_options_come_from_the_config_and_only_result_settings_become_params():
    options = _Example.from_config(CONFIG)
    assert options == _Example(seed=3, batch_size=64, markers=("<think>", "</think>"))
    assert options.params() == {"seed": 3, "markers": ["<think>", "</think>"]}


def test_a_job_runs_with_its_params_and_the_config_s_speed_knobs():
    planned = _Example.from_config(CONFIG).params()
    later_config = {**CONFIG, "generation": {"seed": 99, "batch_size": 8}}
    assert _Example.of_job(planned, later_config) == _Example(seed=3, batch_size=8, markers=("<think>", "</think>"))


def _schema_default(key: str) -> Any:
    node: dict[str, Any] = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    for part in key.split("."):
        node = node["properties"][part]
    return node.get("default", MISSING)


def _as_written(value: Any) -> Any:
    """A field default as a config file writes it: tuples (of tuples) as lists (of lists)."""
    return [_as_written(v) for v in value] if isinstance(value, tuple) else value


def _options_classes() -> list[type[SectionOptions]]:
    for module in OPTION_MODULES:
        importlib.import_module(module)
    found, queue = [], list(SectionOptions.__subclasses__())
    while queue:
        cls = queue.pop()
        queue.extend(cls.__subclasses__())
        if not cls.__module__.startswith("test"):
            found.append(cls)
    return found


@pytest.mark.parametrize("cls", _options_classes(), ids=lambda cls: cls.__name__)
def test_each_setting_has_one_default_that_the_schema_agrees_with(cls):
    for f in fields(cls):
        schema_default = _schema_default(f.metadata["key"])
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if default is MISSING or schema_default is MISSING:
            continue
        assert _as_written(default) == schema_default, f"{cls.__name__}.{f.name} ({f.metadata['key']})"


def test_an_optional_block_the_config_leaves_out_takes_the_field_default():
    from tokenscope.internals.options import DepthOptions, RecurrentDepth

    plain = {"internals": {"depth": {"prompt_ids": None}}}
    assert DepthOptions.from_config(plain).recurrent is None and DepthOptions.from_config(plain).recurrent_depth is None
    recurrent = {"internals": {"depth": {"prompt_ids": ["x"], "recurrent": {"module": "core", "steps": 4}}}}
    options = DepthOptions.from_config(recurrent)
    assert options.params() == {"prompt_ids": ["x"], "recurrent": {"module": "core", "steps": 4}}
    assert options.recurrent_depth == RecurrentDepth(module="core", steps=4)
