"""The `generation` config section as one options object (torch-free: the rules build it when
Snakemake parses the workflow)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tokenscope.options import SectionOptions, config_value, setting


@dataclass(frozen=True)
class GenerationOptions(SectionOptions):
    """How prompts are sampled: `n_samples` per prompt from `seed`; `sampling` overrides the
    model's generation_config (do_sample, temperature, top_p, top_k, max_new_tokens; a missing key
    is the model's); `truncate_to_context` caps a prompt's max_new_tokens to the model's positions
    instead of refusing the prompt. `batch_size` (speed) and `shard_size` (prompts per job) cannot
    change a generation, so they are no job's params.
    """

    n_samples: int = setting("generation.n_samples", 1)
    seed: int = setting("generation.seed", 0)
    sampling: Mapping[str, Any] = setting("generation.sampling", default_factory=dict)
    truncate_to_context: bool = setting("generation.truncate_to_context", False)
    batch_size: int = setting("generation.batch_size", 16, changes_results=False)
    shard_size: int = setting("generation.shard_size", 512, changes_results=False)

    def __post_init__(self) -> None:
        # A read-only copy: the object is frozen, and the config's mapping stays the config's.
        object.__setattr__(self, "sampling", MappingProxyType(dict(self.sampling)))

    def params(self) -> dict[str, Any]:
        """The settings that change a shard's generations, `sampling` a plain dict as the config wrote it."""
        return {**super().params(), "sampling": dict(self.sampling)}

    @classmethod
    def job_params(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """generate_shard's `generation` param: `params()` in the order the config's generation
        section holds its keys (the file's order, then the schema's defaults), which is the order
        that param had before these options existed: a param is compared by its text, so another
        order would rerun every shard already generated."""
        params = cls.from_config(config).params()
        return {key: params[key] for key in config_value(config, "generation") if key in params}
