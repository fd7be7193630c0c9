"""Trends over a series of checkpoints: each checkpoint's measures against its index, with CIs over units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.overlap import overlap_summary, share_above_summary
from tokenscope.analysis.stats.resampling import ESTIMATE_COLUMNS, Estimate, bootstrap_units
from tokenscope.analysis.stats.token_tables import UNIT, TokenData, Tokens, aligned, group_condition
from tokenscope.duckdb_tables import sql_number
from tokenscope.errors import TokenscopeError


@dataclass(frozen=True)
class TrendMeasures:
    """What checkpoint_trends measures: `metric` (a per-token column), its share above the base's
    `quantile`, and with `overlap` the high-`metric` overlap with the base (which needs every
    checkpoint scored on the same tokens as the base)."""

    metric: str = "entropy"
    quantile: float = 0.8
    overlap: bool = True


def checkpoint_trends(
    tokens: TokenData,
    checkpoints: Sequence[str],
    *,
    pairs: TokenData | None = None,
    unit_columns: Sequence[str] = UNIT,
    measures: TrendMeasures = TrendMeasures(),
    boot: BootstrapOptions = BootstrapOptions(),
) -> pd.DataFrame:
    """Metrics of each checkpoint against its index in `checkpoints` (the base first, index 0).

    `tokens`: a per-token table of one source (one prompt set) holding every checkpoint's rows.
    Measures (metric, q = measures.metric, measures.quantile), each with a bootstrap CI over units:
      mean_<metric>, p90_<metric>, p99_<metric>;
      share_above_base_p<q>: share of tokens above the base's `quantile` of the metric;
      high_<metric>_overlap: high_entropy_overlap with the base (only with measures.overlap,
        which needs every checkpoint scored on the same tokens as the base);
      mean_kl_base_model = KL(base || checkpoint) and mean_kl_model_base = KL(checkpoint || base),
        from `pairs` (pair tables of the base with each checkpoint, either order), when given.
    Columns: `checkpoint`, `model`, `measure`, `estimate`, `ci_low`, `ci_high`, `n_units`,
    `n_tokens`, `ci_resolution`. `pairs` and a `tokens` Tokens must share one connection.
    """
    metric, quantile = measures.metric, measures.quantile
    table = Tokens.of(tokens, unit_columns)
    series = table.estimates(metric, ["model"], ("mean", "p90", "p99"), boot)
    base_name = checkpoints[0]
    if (base_name,) not in series:
        raise TokenscopeError(f"no tokens of the base model {base_name!r}")
    (threshold,) = table.exact_quantiles(metric, ["model"], (base_name,), [quantile]).values()
    share_name = f"share_above_base_p{quantile * 100:g}"
    pair_table = None if pairs is None else Tokens.of(pairs, unit_columns, con=table.con)
    rows = []

    def add(index: int, model: str, measure: str, estimate: Estimate) -> None:
        rows.append({"checkpoint": index, "model": model, "measure": measure, **asdict(estimate)})

    base_rows = (
        table.derive(f"SELECT * FROM {table.view} WHERE {group_condition(['model'], [base_name])}")
        if measures.overlap
        else None
    )
    for index, model in enumerate(checkpoints):
        if (model,) not in series:
            raise TokenscopeError(f"no tokens of checkpoint {model!r}")
        for name, estimate in series[(model,)].items():
            add(index, model, f"{name}_{metric}", estimate)
        share = bootstrap_units(share_above_summary(table, metric, model, threshold), ("mean",), boot=boot)["mean"]
        add(index, model, share_name, share)
        if base_rows is not None:
            add(
                index,
                model,
                f"high_{metric}_overlap",
                _overlap_with_base(table, base_rows, base_name, model, measures, boot),
            )
        if pair_table is not None and index > 0:
            for measure, estimate in _kl_measures(pair_table, base_name, model, boot).items():
                add(index, model, measure, estimate)
    return pd.DataFrame(rows, columns=["checkpoint", "model", "measure", *ESTIMATE_COLUMNS])


def _overlap_with_base(
    table: Tokens, base_rows: Tokens, base: str, model: str, measures: TrendMeasures, boot: BootstrapOptions
) -> Estimate:
    """high_entropy_overlap of `model` with the base's rows (the base itself: no join needed)."""
    metric = measures.metric
    if model == base:
        both = base_rows.derive(
            f"SELECT *, {sql_number(metric)} AS base, {sql_number(metric)} AS other FROM {base_rows.view}"
        )
        return bootstrap_units(overlap_summary(both, measures.quantile), ("mean",), boot=boot)["mean"]
    own = table.derive(f"SELECT * FROM {table.view} WHERE {group_condition(['model'], [model])}")
    both = aligned(base_rows, own, metric, table.unit_columns, f"the high-{metric} overlap")
    try:
        return bootstrap_units(overlap_summary(both, measures.quantile), ("mean",), boot=boot)["mean"]
    finally:
        table.con.execute(f"DROP TABLE {both.view}")


def _kl_measures(pairs: Tokens, base: str, model: str, boot: BootstrapOptions) -> dict[str, Estimate]:
    """mean KL(base || model) and KL(model || base) from the pair rows of (base, model), either order."""
    groups = ["model_a", "model_b"]
    present = pairs.series("kl_a_b", groups)
    if (base, model) in present:
        pair, columns = (base, model), ("kl_a_b", "kl_b_a")
    elif (model, base) in present:
        pair, columns = (model, base), ("kl_b_a", "kl_a_b")
    else:
        return {}
    return {
        measure: pairs.estimates(column, groups, ("mean",), boot)[pair]["mean"]
        for measure, column in zip(("mean_kl_base_model", "mean_kl_model_base"), columns, strict=True)
    }
