"""The number of alternatives recorded per token: `scoring.n_alternatives`, formerly `scoring.top_k`.

`top_k` also names the sampling cut-off (`generation.sampling.top_k`), so the number of recorded
alternatives (the `topk_*` columns) is `n_alternatives`. The old config key and function argument
still work during the transition, with a warning. Torch-free: planning imports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any

from tokenscope.errors import ConfigError

DEFAULT_N_ALTERNATIVES = 5
CONFIG_KEY = "scoring.n_alternatives"
DEPRECATED_CONFIG_KEY = "scoring.top_k"


class TokenscopeDeprecationWarning(FutureWarning):
    """A config key or argument that was renamed; shown by default (FutureWarning), unlike DeprecationWarning."""


def n_alternatives_of(scoring: Mapping[str, Any], *, warn: bool = True) -> int:
    """The config's `scoring.n_alternatives`, or its deprecated `scoring.top_k` (with a warning).

    Both given with different values is a ConfigError naming both keys; neither gives the default.
    """
    new, old = scoring.get("n_alternatives"), scoring.get("top_k")
    if old is not None:
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
                stacklevel=2,
            )
        return int(old)
    return DEFAULT_N_ALTERNATIVES if new is None else int(new)


def normalize_scoring_config(scoring: MutableMapping[str, Any], *, warn: bool = True) -> MutableMapping[str, Any]:
    """Map a deprecated `scoring.top_k` to `scoring.n_alternatives` in place (planning time), so that
    rules pass `n_alternatives` to their scripts; returns `scoring`."""
    scoring["n_alternatives"] = n_alternatives_of(scoring, warn=warn)
    scoring.pop("top_k", None)
    return scoring


def renamed_top_k(n_alternatives: int | None, top_k: int | None, function: str) -> int:
    """A function's `n_alternatives`, or its deprecated `top_k` argument (with a warning)."""
    if top_k is not None:
        if n_alternatives is not None and n_alternatives != top_k:
            raise TypeError(f"{function}(): give n_alternatives, not also top_k (its deprecated name)")
        warnings.warn(
            f"{function}(top_k=...) is deprecated: use n_alternatives (the alternatives recorded per token)",
            TokenscopeDeprecationWarning,
            stacklevel=3,
        )
        return int(top_k)
    return DEFAULT_N_ALTERNATIVES if n_alternatives is None else int(n_alternatives)
