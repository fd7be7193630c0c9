"""Checkpoint comparison of one group on one prompt set: its tables (the trend figure: figures.comparison).

Inputs are the workflow's own outputs: each model's per-token table of its own generations, and
the pair tables (cross-scoring) of the base (the group's first model) with each other model on
the base's generations. They are read through DuckDB, only the columns each statistic uses, and
aggregated to per-prompt summaries before any resampling (tokenscope.analysis.stats), so memory
and bootstrap cost do not grow with the number of tokens. The unit of every statistic is the
prompt (docs/schema.md, comparison tables). Models whose weights are byte-identical (their
manifests' `weights_sha256`) are flagged in every table (`identical_weights`, `identical_to`):
their differences are zero by construction, not a finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from tokenscope.analysis.stats import (
    UNIT,
    BootstrapOptions,
    Correction,
    TokenChangeOptions,
    TokenData,
    Tokens,
    TrendMeasures,
    bootstrap_summary,
    checkpoint_trends,
    paired_tests,
    per_unit_means,
    token_changes,
)
from tokenscope.analysis.tokens import to_markdown, write_table
from tokenscope.duckdb_tables import connect, sql_literal
from tokenscope.errors import TokenscopeError
from tokenscope.io import write_atomic, write_text
from tokenscope.model.sources import identical_weight_groups

# Per-token changes listed in the changed-token tables (entropy_diff = entropy_b - entropy_a).
CHANGE_VALUES: tuple[str, ...] = ("entropy_diff", "logprob_diff", "kl_a_b")


@dataclass(frozen=True)
class StatsOptions:
    """Settings of a group's comparison: the bootstrap of every CI, the paired tests (n_perm sign
    patterns, alpha after `correction`) and which changed tokens are listed."""

    boot: BootstrapOptions = BootstrapOptions()
    n_perm: int = 10_000
    alpha: float = 0.05
    correction: Correction = "holm"
    changes: TokenChangeOptions = TokenChangeOptions()


def base_text_tokens(pairs: Tokens, models: Sequence[str]) -> Tokens:
    """Per-token rows of every model on the base's text: the base from entropy_a, others from entropy_b.

    A view over the pair tables (base, other): prompt_id, sample, position, token_id, model,
    entropy, logprob; the base's rows are those of its pair with the group's second model.
    """
    base, others = models[0], list(models[1:])
    keys = "prompt_id, sample, position, token_id"
    listed = ", ".join(sql_literal(m) for m in others)
    return pairs.derive(
        f"SELECT {keys}, {sql_literal(base)} AS model, entropy_a AS entropy, logprob_a AS logprob FROM {pairs.view} "
        f"WHERE model_a = {sql_literal(base)} AND model_b = {sql_literal(others[0])} "
        f"UNION ALL SELECT {keys}, model_b AS model, entropy_b AS entropy, logprob_b AS logprob FROM {pairs.view} "
        f"WHERE model_a = {sql_literal(base)} AND model_b IN ({listed})"
    )


def token_strings(own: Tokens, model: str, id_column: str, string_column: str, ids: np.ndarray) -> pd.Series:
    """id -> the readable string the model's own tokens show most often for it (ties: the smallest)."""
    if ids.size == 0:
        return pd.Series(dtype=object)
    wanted = f"tokenscope_ids_{id(ids)}"
    own.con.register(wanted, pd.DataFrame({"_id": np.unique(ids).astype(np.int64)}))
    try:
        table = own.con.execute(
            f"""SELECT _id, first(text ORDER BY n DESC, text) AS text FROM (
                    SELECT "{id_column}" AS _id, "{string_column}" AS text, count(*) AS n FROM {own.view}
                    WHERE model = {sql_literal(model)} AND "{id_column}" IN (SELECT _id FROM {wanted}) GROUP BY ALL
                ) GROUP BY _id"""
        ).df()
    finally:
        own.con.unregister(wanted)
    return pd.Series(table["text"].to_numpy(), index=table["_id"].to_numpy())


def changed_token_tables(pairs: Tokens, base: str, model: str, options: StatsOptions) -> dict[str, pd.DataFrame]:
    """by_token and by_context_token tables of one checkpoint on the base's text (ids, no strings yet)."""
    rows = pairs.derive(
        f"SELECT *, entropy_b - entropy_a AS entropy_diff FROM {pairs.view} "
        f"WHERE model_a = {sql_literal(base)} AND model_b = {sql_literal(model)}"
    )
    tables = {}
    for by, name in ((["token_id"], "by_token"), (["context_token_id", "token_id"], "by_context_token")):
        tables[name] = pd.concat(
            [
                token_changes(rows, value, by=by, unit_columns=UNIT, listing=options.changes, boot=options.boot)
                .rename(columns={f"mean_{value}": "mean_change"})
                .assign(metric=value)
                for value in CHANGE_VALUES
            ],
            ignore_index=True,
        )
    return tables


def _with_strings(table: pd.DataFrame, strings: dict[str, pd.Series]) -> pd.DataFrame:
    """Each id column followed by its readable string (token_id -> token, context_token_id -> context_token)."""
    columns: list[str] = []
    for column in table.columns:
        columns.append(column)
        if column in strings:
            text = column.removesuffix("_id")
            table = table.assign(**{text: table[column].map(strings[column])})
            columns.append(text)
    return table[columns]


def identical_twins(models: Sequence[str], manifests: Mapping[str, dict[str, Any]] | None) -> dict[str, list[str]]:
    """model -> the group's other models with byte-identical weights (from their manifests;
    empty lists without manifests)."""
    twins: dict[str, list[str]] = {model: [] for model in models}
    if manifests:
        for names in identical_weight_groups({model: manifests[model] for model in models if model in manifests}):
            for name in names:
                twins[name] = [other for other in names if other != name]
    return twins


def identical_weights_note(models: Sequence[str], manifests: Mapping[str, dict[str, Any]] | None) -> str | None:
    """One line for the comparison's tables when some of the group's models share their weights."""
    if not manifests:
        return None
    groups = identical_weight_groups({model: manifests[model] for model in models if model in manifests})
    if not groups:
        return None
    listed = "; ".join(" = ".join(names) for names in groups)
    return (
        f"Identical weights: {listed} (byte-identical tensors, the same weights_sha256): their differences "
        "are zero by construction (a duplicated or mislabelled checkpoint), not a finding."
    )


def _flag_identical(table: pd.DataFrame, twins: Mapping[str, list[str]], model: str | None = None) -> pd.DataFrame:
    """`identical_weights` (bool) and `identical_to` (the twins' names, comma-separated) of each
    row's model (its `model` column, or `model` for a table of one checkpoint)."""
    names = table["model"] if model is None else pd.Series(model, index=table.index)
    to = names.map(lambda name: ", ".join(twins.get(name, []))).astype(object)
    return table.assign(identical_weights=to != "", identical_to=to)


def compare_group(
    own_tokens: TokenData,
    pairs: TokenData,
    models: Sequence[str],
    options: StatsOptions,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    manifests: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, pd.DataFrame]:
    """All comparison tables of a group (its first model is the base).

    own_tokens: per-token tables of each model on its own generations (parquet files or a frame).
    pairs: pair tables (base, other) on the base's generations.
    manifests: model -> its prepared manifest; models with byte-identical weights are flagged in
    every table (`identical_weights`, `identical_to`; see `identical_weights_note`).
    Returns named tables: summary, paired_tests, trends, and changed_<model>_<what> per checkpoint.
    """
    if len(models) < 2:
        raise TokenscopeError(f"a comparison needs a base and at least one other model, got {list(models)}")
    con = connect() if con is None else con
    own = Tokens.of(own_tokens, UNIT, con)
    pair_table = Tokens.of(pairs, UNIT, con)
    boot = options.boot
    summary = bootstrap_summary(own, ["entropy", "prob"], group_columns=["model"], boot=boot)
    summary.insert(0, "tokens", "own generations")
    kl = bootstrap_summary(pair_table, ["kl_a_b", "kl_b_a", "logprob_diff"], group_columns=["model_b"], boot=boot)
    kl = kl.rename(columns={"model_b": "model"})
    kl.insert(0, "tokens", "base's generations")
    on_base_text = base_text_tokens(pair_table, models)
    tests = []
    for label, frame in (("own generations", own), ("base's generations", on_base_text)):
        table = paired_tests(
            per_unit_means(frame, "entropy", unit_columns=UNIT),
            models[0],
            list(models[1:]),
            n_perm=options.n_perm,
            alpha=options.alpha,
            correction=options.correction,
            boot=boot,
        )
        tests.append(table.assign(metric="mean entropy per prompt", tokens=label))
    trends = pd.concat(
        [
            checkpoint_trends(
                own, list(models), unit_columns=UNIT, measures=TrendMeasures(overlap=False), boot=boot
            ).assign(tokens="own generations"),
            checkpoint_trends(
                on_base_text, list(models), pairs=pair_table, unit_columns=UNIT, measures=TrendMeasures(), boot=boot
            ).assign(tokens="base's generations"),
        ],
        ignore_index=True,
    )
    tables = {
        "summary": pd.concat([summary, kl], ignore_index=True),
        "paired_tests": pd.concat(tests, ignore_index=True),
        "trends": trends,
    }
    changed = {
        f"changed_{model}_{name}": table
        for model in models[1:]
        for name, table in changed_token_tables(pair_table, models[0], model, options).items()
    }
    # Readable strings of the listed ids, from the base's own tokens (the pairs score its generations).
    strings = {
        column: token_strings(
            own,
            models[0],
            column,
            column.removesuffix("_id"),
            np.concatenate([t[column].to_numpy(np.int64) for t in changed.values() if column in t.columns]),
        )
        for column in ("token_id", "context_token_id")
    }
    tables.update({name: _with_strings(table, strings) for name, table in changed.items()})
    twins = identical_twins(models, manifests)
    for name in ("summary", "paired_tests", "trends"):
        tables[name] = _flag_identical(tables[name], twins)
    for model in models[1:]:
        for what in ("by_token", "by_context_token"):
            name = f"changed_{model}_{what}"
            tables[name] = _flag_identical(tables[name], twins, model)
    return tables


def write_comparison_tables(tables: Mapping[str, pd.DataFrame], folder: str | Path, note: str | None = None) -> None:
    """Each table as `{name}.csv` and `{name}.md` in `folder`; `note` (identical_weights_note) is a
    line under each markdown table's title."""
    folder = Path(folder)
    for name, table in tables.items():
        title = name.replace("_", " ")
        if not note:
            write_table(table, folder / f"{name}.csv", folder / f"{name}.md", title)
            continue
        frame = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
        write_atomic(folder / f"{name}.csv", partial(frame.to_csv, index=False))
        heading, _, rest = to_markdown(frame, title).partition("\n\n")
        write_text(f"{heading}\n\n**Note**: {note}\n\n{rest}", folder / f"{name}.md")
