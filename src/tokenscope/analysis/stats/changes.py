"""Tokens that changed most: groups of tokens (by token, or by context token and token) with the
largest mean change, each mean with a CI over the units in which its group occurs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tokenscope.analysis.bootstrap_options import BootstrapOptions
from tokenscope.analysis.stats.resampling import UnitSummary, bootstrap_units
from tokenscope.analysis.stats.token_tables import UNIT, TokenData, Tokens, aligned, sql_columns, temp_name
from tokenscope.duckdb_tables import sql_identifier, sql_number


@dataclass(frozen=True)
class TokenChangeOptions:
    """Which groups of tokens are listed: those of at least `min_count` tokens, the `top_n` with the
    largest positive and the `top_n` with the most negative mean change."""

    min_count: int = 5
    top_n: int = 20


def token_changes(
    frame: TokenData,
    value: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = UNIT,
    extra_means: Sequence[str] = (),
    listing: TokenChangeOptions = TokenChangeOptions(),
    boot: BootstrapOptions = BootstrapOptions(),
) -> pd.DataFrame:
    """Groups of tokens (by token, or by context token and token) with the largest mean `value`.

    `value` is a per-token change, e.g. a pair table's `logprob_diff` or `kl_a_b`. Groups with
    fewer than listing.min_count tokens are dropped; then the listing.top_n groups with the largest
    positive mean (direction "up", largest first) and the top_n with the most negative mean ("down",
    lowest first); ties go to the larger count, then to the smaller group key. The CI of each
    listed mean is a cluster bootstrap over the units (prompts) in which the group occurs, on
    per-(group, unit) sums, so a group seen in one prompt only has a zero-width interval: read it
    with `n_units`. Columns: `by`, `count`, `n_units`, `mean_<extra>` per extra_means,
    `mean_<value>`, `ci_low`, `ci_high`, `direction`.
    """
    by = list(by)
    table = Tokens.of(frame, unit_columns)
    table.require([*by, value, *extra_means])
    min_count, top_n = listing.min_count, listing.top_n
    mean_column = f"mean_{value}"
    extra_columns = [f"mean_{c}" for c in extra_means]
    columns = [*by, "count", "n_units", *extra_columns, mean_column, "ci_low", "ci_high", "direction"]
    if top_n <= 0:
        return pd.DataFrame(columns=columns)
    extras = "".join(
        f", fsum({sql_number(c)}) FILTER (WHERE NOT isnan({sql_number(c)})) / "
        f"count(*) FILTER (WHERE NOT isnan({sql_number(c)})) AS {sql_identifier(f'mean_{c}')}"
        for c in extra_means
    )
    groups = temp_name()
    table.con.execute(
        f"""CREATE TEMP TABLE {groups} AS
        SELECT {sql_columns(by)}, count(*) AS "count"{extras},
               fsum({sql_number(value)}) / count(*) AS {sql_identifier(mean_column)}
        FROM {table.view} WHERE NOT isnan({sql_number(value)}) GROUP BY ALL HAVING count(*) >= {int(min_count)}"""
    )
    keys = ", ".join(f"{sql_identifier(c)} NULLS LAST" for c in by)
    mean = sql_identifier(mean_column)
    listed = pd.concat(
        [
            table.con.execute(
                f"SELECT *, '{direction}' AS direction FROM {groups} WHERE {mean} {sign} 0 "
                f'ORDER BY {mean} {order}, "count" DESC, {keys} LIMIT {int(top_n)}'
            ).df()
            for direction, sign, order in (("up", ">", "DESC"), ("down", "<", "ASC"))
        ],
        ignore_index=True,
    )
    table.con.execute(f"DROP TABLE {groups}")
    if listed.empty:
        return pd.DataFrame(columns=columns)
    listed_name = temp_name()
    table.con.register(listed_name, listed[by].assign(_group=np.arange(len(listed))))
    rows = table.joined(f"{sql_columns(by, 't.')}, {sql_number(value)} AS v")
    per_unit = table.con.execute(
        f"SELECT _group, _unit, count(*) AS n, fsum(v) AS s FROM ({rows}) JOIN {listed_name} USING ({sql_columns(by)}) "
        f"WHERE NOT isnan(v) GROUP BY ALL ORDER BY _group, _unit"
    ).fetchnumpy()
    table.con.unregister(listed_name)
    group = np.asarray(per_unit["_group"], dtype=np.int64)
    starts = np.searchsorted(group, np.arange(len(listed) + 1))
    counts, sums = np.asarray(per_unit["n"], dtype=np.float64), np.asarray(per_unit["s"], dtype=np.float64)
    lows, highs, n_units = [], [], []
    for i in range(len(listed)):
        part = slice(starts[i], starts[i + 1])
        estimate = bootstrap_units(UnitSummary(counts[part], sums[part]), ("mean",), boot=boot)
        lows.append(estimate["mean"].ci_low)
        highs.append(estimate["mean"].ci_high)
        n_units.append(estimate["mean"].n_units)
    listed["count"] = listed["count"].astype("int64")
    listed["n_units"], listed["ci_low"], listed["ci_high"] = n_units, lows, highs
    for column in [*extra_columns, mean_column]:
        listed[column] = listed[column].astype("float64")
    return listed[columns]


def changed_tokens(
    base: TokenData,
    other: TokenData,
    metric: str,
    *,
    by: Sequence[str] = ("token_id",),
    unit_columns: Sequence[str] = UNIT,
    listing: TokenChangeOptions = TokenChangeOptions(),
    boot: BootstrapOptions = BootstrapOptions(),
) -> pd.DataFrame:
    """token_changes of `metric` from the base's tokens to another model's, on the same tokens.

    Rows are matched on prompt_id, sample and position and must hold the same token in both (the
    same teacher-forced or cross-scored text). The change is other - base; grouping columns are
    taken from the base. Columns as token_changes, with `mean_base`, `mean_other` and `mean_diff`.
    """
    base_table = Tokens.of(base, unit_columns)
    other_table = Tokens.of(other, unit_columns, con=base_table.con)
    both = aligned(base_table, other_table, metric, [*unit_columns, *by], "changed_tokens")
    try:
        return token_changes(
            both, "diff", by=by, unit_columns=unit_columns, extra_means=("base", "other"), listing=listing, boot=boot
        )
    finally:
        both.con.execute(f"DROP TABLE {both.view}")
