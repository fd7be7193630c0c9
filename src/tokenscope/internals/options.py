"""Options of the internals analyses (config section `internals`): one object per analysis, and one
for the depth figures, whose settings change the figures but not the depth tables.

A subsection's `prompt_sets` (which sets an analysis runs on) is the workflow's planning, not an
option of the analysis. Torch-free: the rules build these when Snakemake parses the workflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenscope.options import SectionOptions, setting


@dataclass(frozen=True)
class RecurrentDepth:
    """A recurrent-depth model (e.g. Huginn): its latent state is the output of `module` at each
    call, and `steps_argument=steps` is passed to forward to set the number of iterations."""

    module: str
    steps_argument: str = "num_steps"
    steps: int = 32


@dataclass(frozen=True)
class MarkerAttentionOptions(SectionOptions):
    """internals.marker_attention: the marker strings and the layers whose attention is averaged
    (None: all; negative counts from the end)."""

    markers: tuple[str, ...] = setting("internals.marker_attention.markers", ("<think>",))
    layers: tuple[int, ...] | None = setting("internals.marker_attention.layers", None)
    batch_size: int = setting("internals.marker_attention.batch_size", 4, changes_results=False)


@dataclass(frozen=True)
class AttentionPositionsOptions(SectionOptions):
    """internals.attention_positions: the (layer, head) pairs, 0-based, and the prompts analysed
    (None: all)."""

    heads: tuple[tuple[int, int], ...] = setting("internals.attention_positions.heads", ((0, 0),))
    prompt_ids: tuple[str, ...] | None = setting("internals.attention_positions.prompt_ids", None)


@dataclass(frozen=True)
class DepthOptions(SectionOptions):
    """internals.depth, what changes its tables: the prompts analysed (None: all) and, for a
    recurrent-depth model, its `recurrent` block as the config writes it (None: a layered model)."""

    prompt_ids: tuple[str, ...] | None = setting("internals.depth.prompt_ids", None)
    recurrent: Mapping[str, Any] | None = setting("internals.depth.recurrent", None)

    @property
    def recurrent_depth(self) -> RecurrentDepth | None:
        return RecurrentDepth(**self.recurrent) if self.recurrent else None


@dataclass(frozen=True)
class DepthFigureOptions(SectionOptions):
    """internals.depth, what changes its figures: tokens per row of the convergence heatmap and
    positions shown in the logit-lens heatmap."""

    chunk_tokens: int = setting("internals.depth.chunk_tokens", 4)
    max_positions: int = setting("internals.depth.max_positions", 40)
