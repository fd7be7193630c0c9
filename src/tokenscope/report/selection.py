"""Which sequences get a token-view page and which prompts get per-prompt figures.

At research scale a prompt set has thousands of prompts with several samples each: a page or a
figure for every one would make the report unusable. The choice is stratified and deterministic:
the sequences (or prompts) are ranked by mean entropy, and at most N are chosen, always the
lowest, the median and the highest, the rest evenly spaced in rank; every sequence of a prompt
listed in config (`token_view.prompt_ids`) is added beyond N. Summaries are computed in DuckDB
(one GROUP BY over the per-token table), so choosing reads two or three columns, never the whole
table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tokenscope.duckdb_tables import parquet_sql, sql_list
from tokenscope.errors import ConfigError
from tokenscope.inputs.prompts import load_prompt_set

# The config key whose prompts always get pages and per-prompt figures, beyond the caps.
LISTED_PROMPTS_KEY = "token_view.prompt_ids"


def stratified_ranks(count: int, n: int) -> np.ndarray:
    """At most `n` of the ranks 0..count-1: the lowest, median ((count-1)//2) and highest, the rest
    evenly spaced in rank (sorted, distinct). n = 1 is the median alone, n = 2 the two ends."""
    if n <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= count:
        return np.arange(count, dtype=np.int64)
    median = (count - 1) // 2
    if n == 1:
        return np.array([median], dtype=np.int64)
    # Step (count-1)/(n-1) > 1, so the rounded points are distinct and include both ends.
    ranks = np.round(np.linspace(0, count - 1, n)).astype(np.int64)
    if median not in ranks and n >= 3:
        inner = np.arange(1, n - 1)
        ranks[inner[np.argmin(np.abs(ranks[inner] - median))]] = median
    return np.sort(ranks)


def sequence_summaries(con: duckdb.DuckDBPyConnection, paths: str | Path | Sequence[str | Path]) -> pa.Table:
    """One row per sequence (prompt_id, sample) of a per-token table, sorted by prompt id and sample:
    n_tokens, mean_entropy, max_entropy, mean_surprisal and max_surprisal (−logprob, nats).

    Means and maxima are over the finite values (NaN where a sequence has none).
    """
    aggregates = {
        "mean_entropy": ("avg", "entropy"),
        "max_entropy": ("max", "entropy"),
        "mean_surprisal": ("avg", "-logprob"),
        "max_surprisal": ("max", "-logprob"),
    }
    return summaries_by_sequence(con, parquet_sql(paths), aggregates)


def summaries_by_sequence(
    con: duckdb.DuckDBPyConnection, source: str, aggregates: Mapping[str, tuple[str, str]]
) -> pa.Table:
    """One row per sequence (prompt_id, sample) of the table `source` (SQL), sorted by prompt id and
    sample: n_tokens, then per name of `aggregates` its (function, expression) over the rows where
    the expression is finite (NULL where a sequence has none)."""
    selected = "".join(
        f",\n               {function}({expression}) FILTER (WHERE isfinite({expression})) AS {name}"
        for name, (function, expression) in aggregates.items()
    )
    return con.sql(
        f"""
        SELECT prompt_id, sample,
               count(*) AS n_tokens{selected}
        FROM {source}
        GROUP BY prompt_id, sample
        ORDER BY prompt_id, sample
        """
    ).to_arrow_table()


def prompt_mean_entropy(con: duckdb.DuckDBPyConnection, paths: str | Path | Sequence[str | Path]) -> pa.Table:
    """Per prompt of a per-token table: mean entropy over all its samples' tokens, sorted by prompt id."""
    return con.sql(
        f"""
        SELECT prompt_id, avg(entropy) FILTER (WHERE isfinite(entropy)) AS mean_entropy
        FROM {parquet_sql(paths)}
        GROUP BY prompt_id
        ORDER BY prompt_id
        """
    ).to_arrow_table()


def _rank_order(prompt_ids: Sequence[str], mean_entropy: np.ndarray, *tiebreak: np.ndarray) -> np.ndarray:
    """Row order by mean entropy (missing last), ties by prompt id (and `tiebreak`): deterministic."""
    values = np.where(np.isnan(mean_entropy), np.inf, mean_entropy)
    ids = np.asarray(prompt_ids, dtype=object).astype(str)
    return np.lexsort((*reversed(tiebreak), ids, values))


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def choose_sequences(
    summaries: pa.Table, max_pages: int, listed: Iterable[str] = (), by: str = "mean_entropy"
) -> np.ndarray:
    """Rows of `summaries` (sequence_summaries, or summaries_by_sequence with a column `by`) that
    get a page, in summaries' order: at most `max_pages` stratified by column `by` (ties by prompt
    id, then sample; missing values rank last), plus every sequence of a `listed` prompt."""
    if summaries.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    prompt_ids = [str(p) for p in summaries.column("prompt_id").to_pylist()]
    samples = np.asarray(summaries.column("sample").to_numpy(zero_copy_only=False), dtype=np.int64)
    order = _rank_order(prompt_ids, _float_column(summaries, by), samples)
    chosen = set(order[stratified_ranks(len(order), max_pages)].tolist())
    wanted = set(listed)
    chosen.update(i for i, prompt_id in enumerate(prompt_ids) if prompt_id in wanted)
    return np.array(sorted(chosen), dtype=np.int64)


def choose_prompts(prompt_means: pa.Table, max_prompts: int, listed: Iterable[str] = ()) -> list[str]:
    """Prompt ids of `prompt_means` (prompt_mean_entropy) that get figures, in its order: at most
    `max_prompts` stratified by mean entropy, plus every `listed` prompt present."""
    prompt_ids = [str(p) for p in prompt_means.column("prompt_id").to_pylist()]
    order = _rank_order(prompt_ids, _float_column(prompt_means, "mean_entropy"))
    chosen = set(order[stratified_ranks(len(order), max_prompts)].tolist())
    wanted = set(listed)
    chosen.update(i for i, prompt_id in enumerate(prompt_ids) if prompt_id in wanted)
    return [prompt_ids[i] for i in sorted(chosen)]


def check_listed_prompts(listed: Iterable[str], prompt_files: Iterable[str | Path]) -> None:
    """Stop with one line if a listed prompt id is in none of the prompt set files.

    An id in some of the sets is fine: the sets without it simply have no sequence of it.
    (Derived prompt sets share their source's file and ids.)
    """
    listed = list(listed)
    if not listed:
        return
    known: set[str] = set()
    for path in dict.fromkeys(str(p) for p in prompt_files):
        known.update(p.id for p in load_prompt_set(path))
    for prompt_id in listed:
        if prompt_id not in known:
            raise ConfigError(f"{LISTED_PROMPTS_KEY}: unknown prompt id {prompt_id!r} (in none of the prompt sets)")


def rows_of_prompts(
    con: duckdb.DuckDBPyConnection,
    paths: str | Path | Sequence[str | Path],
    columns: Sequence[str],
    prompt_ids: Sequence[str],
) -> pa.Table:
    """`columns` of the rows of the chosen prompts only (the filter is pushed into the parquet scan)."""
    selected = ", ".join(f'"{c}"' for c in columns)
    if not prompt_ids:
        return con.sql(f"SELECT {selected} FROM {parquet_sql(paths)} LIMIT 0").to_arrow_table()
    listed = sql_list(list(prompt_ids))
    return con.sql(f"SELECT {selected} FROM {parquet_sql(paths)} WHERE prompt_id IN ({listed})").to_arrow_table()
