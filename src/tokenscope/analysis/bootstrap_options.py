"""The settings of every bootstrap in tokenscope, and the one home of their defaults.

Pandas- and numpy-free: tokenscope.outcomes.options (read when Snakemake parses the workflow) takes
its defaults from here, as the statistics of tokenscope.analysis.stats take their settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenscope.errors import ConfigError

# Resamples of every bootstrap, and the coverage of its percentile interval.
DEFAULT_N_BOOT = 2000
DEFAULT_CI = 0.95
# Bins of the per-unit histograms behind bootstrap CIs of quantiles, per grid segment: the first
# grid puts them over the series' [min, max] (0.002 nats for entropies up to 8 nats), the second
# over the ranges the resampled quantiles use. One series' histogram takes units x bins x 4 bytes
# per segment (32 MB for 2000 prompts) and its bootstrap units x bins multiply-adds per resample
# and segment (about 0.1 s for 2000 resamples of 2000 prompts on 2 cores).
DEFAULT_QUANTILE_BINS = 4096


@dataclass(frozen=True)
class BootstrapOptions:
    """How a bootstrap resamples: n_boot resamples drawn from a generator seeded with `seed`, the
    percentile interval covering `ci`, and `bins` histogram bins per grid segment for quantiles."""

    n_boot: int = DEFAULT_N_BOOT
    ci: float = DEFAULT_CI
    seed: int = 0
    bins: int = DEFAULT_QUANTILE_BINS

    def __post_init__(self) -> None:
        if not 0 < self.ci < 1:
            raise ConfigError(f"ci must be in (0, 1), got {self.ci}")
