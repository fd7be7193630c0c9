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
OPTION_MODULES = ["tokenscope.options", "tokenscope.generation.options", "tokenscope.scoring.options"]


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
        value = list(default) if isinstance(default, tuple) else default
        assert value == schema_default, f"{cls.__name__}.{f.name} ({f.metadata['key']})"
