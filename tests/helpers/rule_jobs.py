"""Stand-ins for what Snakemake hands a rule script (`snakemake.params`, `snakemake.config`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from helpers.paths import REPO


class JobParams(SimpleNamespace):
    """A job's params by attribute and by name, as Snakemake's own (a Namedlist): scripts rebuild
    options objects with `XOptions.of_job(smk.params, smk.config)`."""

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


def validated_config(**sections: Any) -> dict[str, Any]:
    """A config with `sections`, validated as the workflow does (the schema fills every default)."""
    from snakemake.utils import validate

    config = {"models": {"m": {"hub": "org/m"}}, "prompt_sets": {"p": "p.jsonl"}, **sections}
    validate(config, str(REPO / "schemas" / "config.schema.yaml"), set_default=True)
    return config
