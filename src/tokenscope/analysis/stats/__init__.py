"""Statistics whose unit is the prompt (or prompt x sample), not the token, out of core.

Tokens of one generation are not independent: a prompt that makes a model hesitate raises the
entropy of all its tokens together. Treating tokens as independent draws makes confidence
intervals far too narrow and tests far too eager. So:

- confidence intervals come from a cluster bootstrap: units (prompts) are drawn with replacement
  and a statistic is recomputed on the pooled tokens of the drawn units (a unit drawn twice counts
  twice); the interval is the percentile interval of the resampled statistic;
- tests between two models compare per-unit means on the same units (paired);
- every random function takes a seed (BootstrapOptions.seed), and the same seed gives the same
  numbers. Each estimate (a group, a metric, a comparison) draws from a fresh generator seeded with
  it, so its numbers do not depend on which other groups or models are in the same call. Units are
  numbered in the sorted order of their key, so the numbers do not depend on the order of the rows
  either.

Tables are read through DuckDB (tokenscope.duckdb_tables): each statistic first aggregates the
tokens to per-unit summaries (`UnitSummary`: token count and sum per unit, and for quantiles a
per-unit histogram), and the bootstrap works on those only, so its cost does not depend on the
number of tokens. A resample is a vector of draw counts per unit; its pooled mean is exact (sum of
drawn sums / sum of drawn counts) and its pooled histogram is draw counts @ per-unit histograms (a
float32 matrix product over blocks of resamples; counts are exact below 2^24 tokens per bin).
A resample's quantile interpolates linearly within the bins of the histogram's cumulative count
that hold the order statistics it needs; the exact order statistics lie in those same bins, so
each resampled quantile, and each CI bound, is within the width of the bins it used of the exact
token-level value with the same draws. The grid comes in two passes: `bins` uniform bins over the
series' finite [min, max] locate the bins the resampled quantiles use, then `bins` bins over each
of those ranges (one bin over each gap between them) give the CI. The widest bin used is reported
per row as `ci_resolution` (0 for means and shares, which are exact); it is typically 10^-6 to
10^-4 of the range. Point estimates are exact (DuckDB's quantile_cont on the tokens: numpy's
default linear interpolation). Values of +-inf count in the end bins; NaN values are left out.

Statistics are named: "mean", "median" and "pNN" (the NN-th percentile, e.g. "p90", "p99.9").
Tables are pandas DataFrames of aggregated rows; write them with tokenscope.analysis.write_table.

Modules: resampling (the draws, resampled statistics and the percentile interval, shared with
tokenscope.outcomes), token_tables (per-token tables in DuckDB and their per-unit summaries),
summaries (bootstrap summaries), paired (paired tests between models), overlap (high-entropy
tokens), trends (over a series of checkpoints), changes (tokens that changed most). The settings
of every bootstrap, BootstrapOptions, are in tokenscope.analysis.bootstrap_options.
"""

from tokenscope.analysis.bootstrap_options import (
    DEFAULT_CI,
    DEFAULT_N_BOOT,
    DEFAULT_QUANTILE_BINS,
    BootstrapOptions,
)
from tokenscope.analysis.stats.changes import TokenChangeOptions, changed_tokens, token_changes
from tokenscope.analysis.stats.overlap import high_entropy_overlap, share_above
from tokenscope.analysis.stats.paired import (
    Correction,
    adjust_pvalues,
    paired_tests,
    per_unit_means,
    rank_biserial,
    sign_flip_pvalue,
)
from tokenscope.analysis.stats.resampling import (
    ESTIMATE_COLUMNS,
    Estimate,
    UnitSummary,
    bootstrap_units,
    draw_blocks,
    percentile_interval,
    resample_counts,
    resampled_statistics,
    statistic_quantile,
)
from tokenscope.analysis.stats.summaries import DEFAULT_STATISTICS, bootstrap_summary, cluster_bootstrap
from tokenscope.analysis.stats.token_tables import ALIGN_COLUMNS, UNIT, TokenData, Tokens
from tokenscope.analysis.stats.trends import TrendMeasures, checkpoint_trends

__all__ = [
    "ALIGN_COLUMNS",
    "DEFAULT_CI",
    "DEFAULT_N_BOOT",
    "DEFAULT_QUANTILE_BINS",
    "DEFAULT_STATISTICS",
    "ESTIMATE_COLUMNS",
    "UNIT",
    "BootstrapOptions",
    "Correction",
    "Estimate",
    "TokenChangeOptions",
    "TokenData",
    "Tokens",
    "TrendMeasures",
    "UnitSummary",
    "adjust_pvalues",
    "bootstrap_summary",
    "bootstrap_units",
    "changed_tokens",
    "checkpoint_trends",
    "cluster_bootstrap",
    "draw_blocks",
    "high_entropy_overlap",
    "paired_tests",
    "per_unit_means",
    "percentile_interval",
    "rank_biserial",
    "resample_counts",
    "resampled_statistics",
    "share_above",
    "sign_flip_pvalue",
    "statistic_quantile",
    "token_changes",
]
