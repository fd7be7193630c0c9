"""The `scoring` config section as one options object, and the one home of `n_alternatives`'
deprecated name `top_k`.

`top_k` also names the sampling cut-off (`generation.sampling.top_k`), so the number of recorded
alternatives (the `topk_*` columns) is `n_alternatives`. The old config key (`scoring.top_k`:
`ScoringOptions.from_config`, and planning's `normalize_scoring_config`, map it) and function
argument (`top_k=` of run_generation and run_teacher_forcing: `renamed_top_k`) still work during
the transition, with a warning. Torch-free: planning and the rules import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tokenscope.errors import ConfigError
from tokenscope.inputs.chat import ScoreSpan
from tokenscope.options import SectionOptions, config_value, setting

CONFIG_KEY = "scoring.n_alternatives"
DEPRECATED_CONFIG_KEY = "scoring.top_k"

_Scoring = TypeVar("_Scoring", bound="ScoringOptions")


class TokenscopeDeprecationWarning(FutureWarning):
    """A config key or argument that was renamed; shown by default (FutureWarning), unlike DeprecationWarning."""


@dataclass(frozen=True)
class ScoringOptions(SectionOptions):
    """How tokens are scored: `n_alternatives` most probable tokens recorded per token (the
    `topk_*` columns; 0: none), `score_span` of a reference answer scored ("answer": the answer's
    tokens, "all": the prompt's too). `batch_size` (speed) and `chunk_rows` (positions unembedded at
    once: memory) cannot change a table, so they are no job's params.
    """

    # The schema has no default here: a deprecated scoring.top_k must be told apart from it.
    n_alternatives: int = setting(CONFIG_KEY, 5)
    score_span: ScoreSpan = setting("scoring.score_span", "answer")
    batch_size: int = setting("scoring.batch_size", 8, changes_results=False)
    chunk_rows: int = setting("scoring.chunk_rows", 512, changes_results=False)

    @classmethod
    def from_config(cls: type[_Scoring], config: Mapping[str, Any], *, warn: bool = True) -> _Scoring:
        """The config's scoring options, a deprecated `scoring.top_k` as n_alternatives (with a warning;
        disagreeing with scoring.n_alternatives is a ConfigError naming both keys)."""
        scoring = config_value(config, "scoring")
        filled = {**scoring, "n_alternatives": _configured_n_alternatives(scoring, warn)}
        return super().from_config({**config, "scoring": filled})


def _configured_n_alternatives(scoring: Mapping[str, Any], warn: bool) -> int:
    """The `scoring` section's n_alternatives, or its deprecated `top_k` (with a warning); both given
    with different values is a ConfigError naming both keys; neither gives ScoringOptions' default."""
    new, old = scoring.get("n_alternatives"), scoring.get("top_k")
    if old is None:
        return ScoringOptions.n_alternatives if new is None else int(new)
    if new is not None and new != old:
        raise ConfigError(
            f"{DEPRECATED_CONFIG_KEY} ({old}) and {CONFIG_KEY} ({new}) disagree: "
            f"{DEPRECATED_CONFIG_KEY} is the old name of {CONFIG_KEY}; give only {CONFIG_KEY}"
        )
    if warn:
        warnings.warn(
            f"config key {DEPRECATED_CONFIG_KEY} is deprecated: use {CONFIG_KEY} "
            "(the alternatives recorded per token; generation.sampling.top_k is the sampling cut-off)",
            TokenscopeDeprecationWarning,
            stacklevel=3,
        )
    return int(old)


def normalize_scoring_config(scoring: MutableMapping[str, Any], *, warn: bool = True) -> MutableMapping[str, Any]:
    """Planning time: the config's `scoring` section with its n_alternatives as ScoringOptions reads
    it (a deprecated `scoring.top_k` mapped and warned about once, here) and no `top_k`, so that
    rules and job scripts read one key; returns `scoring`, changed in place."""
    scoring["n_alternatives"] = _configured_n_alternatives(scoring, warn)
    scoring.pop("top_k", None)
    return scoring


def renamed_top_k(n_alternatives: int | None, top_k: int | None, function: str, *, stacklevel: int = 3) -> int:
    """A function's `n_alternatives`, or its deprecated `top_k` argument (with a warning pointing
    `stacklevel` frames up: the function's caller); neither: ScoringOptions' default."""
    if top_k is not None:
        if n_alternatives is not None and n_alternatives != top_k:
            raise TypeError(f"{function}(): give n_alternatives, not also top_k (its deprecated name)")
        warnings.warn(
            f"{function}(top_k=...) is deprecated: use n_alternatives (the alternatives recorded per token)",
            TokenscopeDeprecationWarning,
            stacklevel=stacklevel,
        )
        return int(top_k)
    return ScoringOptions.n_alternatives if n_alternatives is None else int(n_alternatives)


def scoring_with_deprecated(
    scoring: ScoringOptions | None, deprecated: Mapping[str, int], function: str
) -> ScoringOptions:
    """A public function's scoring options: `scoring` (None: the defaults) with the function's
    deprecated keyword arguments (`deprecated`: only `top_k`, n_alternatives' old name) mapped, with
    a warning; `top_k` that disagrees with a given `scoring` is a TypeError."""
    unknown = sorted(set(deprecated) - {"top_k"})
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    options = scoring if scoring is not None else ScoringOptions()
    if "top_k" not in deprecated:
        return options
    given = scoring.n_alternatives if scoring is not None else None
    return replace(options, n_alternatives=renamed_top_k(given, deprecated["top_k"], function, stacklevel=4))
