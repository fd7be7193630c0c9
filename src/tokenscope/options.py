"""Options objects: one typed, frozen object per config section that reaches the library.

A section's options are built from the validated config (`from_config`), become a job's Snakemake
params in one way (`params`: only the settings that change the job's results, so that a speed or
memory knob reruns nothing), and come back in the rule script in one way (`of_job`: the params
the job was planned with, the other settings from the config). Library functions take the object,
so a notebook user builds it directly and gets the same defaults as the workflow: each field's
default is the one default of its setting, and a test checks the config schema agrees.

Torch- and pandas-free: the workflow's planning builds them when Snakemake parses the workflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, TypeVar

_Options = TypeVar("_Options", bound="SectionOptions")


def setting(key: str, default: Any = MISSING, *, changes_results: bool = True, default_factory: Any = MISSING) -> Any:
    """A field read from the dotted config key `key` (e.g. "generation.seed").

    `changes_results`: the setting changes the outputs of the jobs that use it, so it is one of
    their params (a changed value reruns them); speed and memory knobs are not.
    `default_factory` instead of `default` for a setting whose default is a mapping (`{}`).
    """
    metadata = {"key": key, "changes_results": changes_results}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def config_value(config: Mapping[str, Any], key: str, absent: Any = MISSING) -> Any:
    """The value at dotted `key` of a validated config (the schema filled in every default);
    `absent` where the key is not there, for an optional setting the schema gives no default (an
    optional block such as internals.depth.recurrent), else KeyError."""
    value: Any = config
    for part in key.split("."):
        if absent is not MISSING and part not in value:
            return absent
        value = value[part]
    return value


def _frozen(value: Any) -> Any:
    """Lists as tuples, so that a frozen options object holds no mutable values."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """Tuples as lists: params as the config wrote them, so a value reruns nothing it did not before."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class SectionOptions:
    """Base of the options objects: subclasses declare their fields with `setting`."""

    @classmethod
    def from_config(cls: type[_Options], config: Mapping[str, Any]) -> _Options:
        return cls(**{f.name: _frozen(config_value(config, f.metadata["key"], f.default)) for f in fields(cls)})

    def params(self) -> dict[str, Any]:
        """The settings that change results, as a job's Snakemake params (one param)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata["changes_results"]}

    @classmethod
    def of_job(cls: type[_Options], params: Mapping[str, Any], config: Mapping[str, Any]) -> _Options:
        """The options a rule script runs with: `params` (a `params()` the job was planned with)
        for the settings that change results, `config` for the rest."""
        planned = {f.name: _frozen(params[f.name]) for f in fields(cls) if f.metadata["changes_results"]}
        return replace(cls.from_config(config), **planned)

    @classmethod
    def config_keys(cls) -> dict[str, str]:
        """Field name -> the config key it is read from."""
        return {f.name: f.metadata["key"] for f in fields(cls)}
