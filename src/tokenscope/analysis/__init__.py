"""Analysis of per-token tables: describe, quantile bins, token groups, statistics and group comparison."""
