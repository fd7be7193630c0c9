"""Settings of the outcome statistics (config section `outcomes`) and the k values of pass@k.

Torch- and pandas-free: the workflow's planning (tokenscope.workflow.planning) checks the config
with it when Snakemake parses the workflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenscope.analysis.bootstrap_options import DEFAULT_CI, DEFAULT_N_BOOT
from tokenscope.errors import ConfigError


@dataclass(frozen=True)
class OutcomeOptions:
    """Settings of the outcome statistics (config section `outcomes`)."""

    pass_at_k: tuple[int, ...] = (1,)
    high_entropy_quantile: float = 0.8
    n_boot: int = DEFAULT_N_BOOT
    ci: float = DEFAULT_CI
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.ci < 1:
            raise ConfigError(f"outcomes.ci must be in (0, 1), got {self.ci}")
        if not 0 < self.high_entropy_quantile < 1:
            raise ConfigError(f"outcomes.high_entropy_quantile must be in (0, 1), got {self.high_entropy_quantile}")
        if any(k < 1 for k in self.pass_at_k):
            raise ConfigError(f"outcomes.pass_at_k: k must be at least 1, got {list(self.pass_at_k)}")


def pass_at_k_values(
    pass_at_k: int | Sequence[int] | None, n_samples: int, key: str = "outcomes.pass_at_k"
) -> list[int]:
    """The k values of the config: None -> 1..n_samples, an integer K -> 1..K, a list as given
    (sorted, unique). A k greater than n_samples is a ConfigError of one line naming `key`."""
    if pass_at_k is None:
        ks = list(range(1, n_samples + 1))
    elif isinstance(pass_at_k, int):
        ks = list(range(1, pass_at_k + 1))
    else:
        ks = sorted({int(k) for k in pass_at_k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"{key}: k must be at least 1, got {pass_at_k!r}")
    if ks[-1] > n_samples:
        raise ConfigError(
            f"{key}: k = {ks[-1]} is greater than generation.n_samples = {n_samples} "
            f"(pass@k needs at least k samples per prompt)"
        )
    return ks
