"""Options of the report's views (config sections `token_view` and `side_by_side`): which sequences
get a page and the metric a page opens with.

A section's `prompt_sets` (and the side-by-side view's pairs and sources) are the workflow's
planning, not options of a view. Pandas-free: the rules build these when Snakemake parses the
workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenscope.options import SectionOptions, setting


@dataclass(frozen=True)
class TokenViewOptions(SectionOptions):
    """token_view: at most `max_pages` pages per model and token source (report.selection), plus
    every sequence of the listed `prompt_ids`; pages open with `metric` (entropy, surprisal,
    varentropy, margin or kl)."""

    max_pages: int = setting("token_view.max_pages", 24)
    prompt_ids: tuple[str, ...] = setting("token_view.prompt_ids", ())
    metric: str = setting("token_view.metric", "entropy")


@dataclass(frozen=True)
class SideBySideOptions(SectionOptions):
    """side_by_side: at most `max_pages` pages per pair table, plus every sequence of the prompts
    the token view lists (token_view.prompt_ids); pages open with `metric` (logprob_diff, kl_a_b
    or kl_b_a)."""

    max_pages: int = setting("side_by_side.max_pages", 12)
    prompt_ids: tuple[str, ...] = setting("token_view.prompt_ids", ())
    metric: str = setting("side_by_side.metric", "logprob_diff")
