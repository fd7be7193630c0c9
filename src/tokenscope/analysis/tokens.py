"""Token analyses of a per-token table (one row per scored token), vectorized.

`describe()` of a metric, quantile bins of a metric with tokens sampled from some bins, and mean
metrics grouped by context token or by scored token. Samples per bin are exactly
`min(samples_per_bin, bin size)`, group tables carry a count with a minimum-count filter, and the
highest / lowest groups are taken deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from tokenscope.errors import ConfigError
from tokenscope.io import write_atomic

# Columns that identify which measurements a row belongs to; analyses run within each.
GROUP_KEYS: tuple[str, ...] = ("model", "source", "prompt_set")
# Columns that locate a sampled token in its generation.
SAMPLE_COLUMNS: tuple[str, ...] = ("prompt_id", "sample", "step", "context_token", "token")
DESCRIBE_STATS: tuple[str, ...] = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")


def _group_keys(tokens: pd.DataFrame) -> list[str]:
    return [key for key in GROUP_KEYS if key in tokens.columns]


def _require(tokens: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in tokens.columns]
    if missing:
        raise KeyError(f"tokens frame lacks column(s) {missing}; it has {list(tokens.columns)}")


def describe_metric(
    tokens: pd.DataFrame,
    metric: str = "entropy",
    by: Sequence[str] = ("model", "source", "prompt_set"),
) -> pd.DataFrame:
    """`describe()` statistics of `metric` per group of `by`: one row per group, keys as columns.

    Pass `by=[..., "prompt_id"]` for one row per prompt. NaN metric values are not counted
    (as in pandas). `count` is an integer column; the other statistics are float64.
    """
    by = list(by)
    _require(tokens, [*by, metric])
    # float64 so that float32 columns give the same statistics as float64 ones
    values = tokens[metric].astype("float64")
    if by:
        stats = values.groupby([tokens[key] for key in by], sort=True, dropna=False).describe()
        stats = stats.reindex(columns=list(DESCRIBE_STATS)).reset_index()
    else:
        stats = values.describe().reindex(list(DESCRIBE_STATS)).to_frame().T.reset_index(drop=True)
    stats["count"] = stats["count"].fillna(0).astype("int64")
    return stats


def displayed_bins(n_bins: int) -> list[int]:
    """The bins shown with samples: 0, n/4, n/2, 3n/4 and n-1 (integer division), deduplicated."""
    if n_bins <= 0:
        return []
    return sorted({0, n_bins // 4, n_bins // 2, n_bins * 3 // 4, n_bins - 1})


def _even_positions(size: int, k: int) -> np.ndarray:
    """k positions spread evenly over range(size), first and last included; distinct when k <= size."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.rint(np.linspace(0, size - 1, k)).astype(np.int64))


def _interval_text(lower: float, upper: float, first: bool) -> str:
    # the lowest bin is closed on the left (pd.qcut's include_lowest); the others are (lower, upper]
    return f"{'[' if first else '('}{lower:.6g}, {upper:.6g}]"


def _qcut_one(values: pd.Series, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin code per value, -1 for NaN; lower edges; upper edges) of the non-empty bins, renumbered 0.."""
    finite = values.notna().to_numpy()
    codes = np.full(len(values), -1, dtype=np.int64)
    if not finite.any():
        return codes, np.zeros(0), np.zeros(0)
    raw, edges = pd.qcut(values[finite], n_bins, labels=False, retbins=True, duplicates="drop")
    if len(edges) < 2:
        # a constant metric: pd.qcut drops every edge but one and leaves no bin; make it one bin
        codes[finite] = 0
        return codes, edges[:1].astype("float64"), edges[:1].astype("float64")
    raw = raw.to_numpy().astype(np.int64)
    # with fewer rows than bins some quantile bins are empty: keep only the bins that hold rows,
    # so that bin numbers run 0..n-1 over the bins that exist
    used = np.unique(raw)
    renumber = np.full(len(edges) - 1, -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    codes[finite] = renumber[raw]
    return codes, edges[used].astype("float64"), edges[used + 1].astype("float64")


def qcut_bins(
    tokens: pd.DataFrame,
    metric: str = "entropy",
    n_bins: int = 10,
    samples_per_bin: int = 5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantile bins of `metric` (pd.qcut, duplicates='drop') and tokens sampled from some bins.

    Bins are computed separately for each model/source/prompt_set present. Returns (bins, samples):

    - bins: one row per non-empty bin: group keys, `bin` (0-based), `lower`, `upper` (the quantile
      edges; the first bin includes its lower edge), `count`, `mean_<metric>`, and `displayed`
      (bins 0, n/4, n/2, 3n/4, n-1 of the n bins: those shown with samples).
    - samples: for each displayed bin, min(samples_per_bin, count) rows evenly spaced over the bin
      sorted by the metric (lowest and highest included): group keys, `bin`, `bin_range`,
      prompt_id, sample, step, context_token, token, and the metric.

    A constant metric gives one bin; rows with a NaN metric are left out.
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be at least 1, got {n_bins}")
    if samples_per_bin < 0:
        raise ConfigError(f"samples_per_bin must be >= 0, got {samples_per_bin}")
    keys = _group_keys(tokens)
    _require(tokens, [metric])
    sample_cols = [c for c in SAMPLE_COLUMNS if c in tokens.columns and c != metric]
    mean_col = f"mean_{metric}"
    bin_columns = [*keys, "bin", "lower", "upper", "count", mean_col, "displayed"]
    sample_columns = [*keys, "bin", "bin_range", *sample_cols, metric]

    bin_frames: list[pd.DataFrame] = []
    sample_frames: list[pd.DataFrame] = []
    groups = tokens.groupby(keys, sort=True, dropna=False) if keys else [((), tokens)]
    for key_values, group in groups:  # one iteration per model/source/prompt_set, not per row
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        values = group[metric].astype("float64")
        codes, lower, upper = _qcut_one(values, n_bins)
        kept = codes >= 0
        if not kept.any():
            continue
        n_actual = len(lower)
        count = np.bincount(codes[kept], minlength=n_actual)
        total = np.bincount(codes[kept], weights=values.to_numpy()[kept], minlength=n_actual)
        shown = displayed_bins(n_actual)
        bins = pd.DataFrame(
            {
                "bin": np.arange(n_actual),
                "lower": lower,
                "upper": upper,
                "count": count,
                mean_col: total / count,
                "displayed": np.isin(np.arange(n_actual), shown),
            }
        )
        for key, value in zip(keys, key_values, strict=True):
            bins.insert(keys.index(key), key, value)
        bin_frames.append(bins)

        # stable sort by (bin, metric): rows tied on the metric keep the frame's order
        # the metric keeps its own dtype in the samples (an integer rank stays an integer)
        rows = group.loc[kept, [*sample_cols, metric]].assign(bin=codes[kept])
        rows = rows.sort_values(["bin", metric], kind="stable")
        starts = np.concatenate([[0], np.cumsum(count)[:-1]])
        take = np.concatenate([starts[b] + _even_positions(count[b], min(samples_per_bin, count[b])) for b in shown])
        picked = rows.iloc[take].copy()
        ranges = np.array([_interval_text(lower[b], upper[b], b == 0) for b in range(n_actual)], dtype=object)
        picked["bin_range"] = ranges[picked["bin"].to_numpy()]
        for key, value in zip(keys, key_values, strict=True):
            picked[key] = value
        sample_frames.append(picked[sample_columns])

    bins = pd.concat(bin_frames, ignore_index=True) if bin_frames else pd.DataFrame(columns=bin_columns)
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame(columns=sample_columns)
    return bins[bin_columns], samples[sample_columns]


def token_groups(
    tokens: pd.DataFrame,
    by: str = "context_token",
    metrics: tuple[str, ...] = ("entropy", "prob"),
    min_count: int = 5,
    top_n: int = 20,
) -> pd.DataFrame:
    """Mean metrics per value of `by`, for the groups with the highest and lowest mean.

    Grouped also by model/source/prompt_set when present. Columns: group keys, `by`, `count`,
    `mean_<metric>` per metric, `extreme`. Groups with fewer than `min_count` tokens are dropped.
    Ranked by the first metric (entropy by default): within each model/source/prompt_set, the
    `top_n` highest rows (extreme="high", highest first) and then the `top_n` lowest
    (extreme="low", lowest first); ties are broken by larger count, then by the `by` value.
    When fewer than 2 * top_n groups remain, a group can be in both lists and then appears
    twice, once per `extreme`.
    """
    if not metrics:
        raise ConfigError("metrics must name at least one column")
    keys = [k for k in _group_keys(tokens) if k != by]
    _require(tokens, [by, *metrics])
    mean_cols = [f"mean_{m}" for m in metrics]
    columns = [*keys, by, "count", *mean_cols, "extreme"]
    # float64 means: float32 accumulation loses digits over many tokens
    values = tokens[list(metrics)].astype("float64")
    grouped = values.groupby([tokens[c] for c in [*keys, by]], sort=True, dropna=False)
    table = grouped.mean()
    table.columns = mean_cols
    table.insert(0, "count", grouped.size().astype("int64"))
    table = table.reset_index()
    table = table[table["count"] >= min_count]
    if table.empty or top_n <= 0:
        return pd.DataFrame(columns=columns)

    rank_col = mean_cols[0]
    ordered = []
    for extreme, ascending in (("high", False), ("low", True)):
        part = table.sort_values(
            [*keys, rank_col, "count", by], ascending=[*([True] * len(keys)), ascending, False, True], kind="stable"
        )
        part = part.groupby(keys, sort=False, dropna=False).head(top_n) if keys else part.head(top_n)
        ordered.append(part.assign(extreme=extreme))
    result = pd.concat(ordered, ignore_index=True)
    # group keys first, then the high list before the low list, each keeping its own order
    result["_list"] = (result["extreme"] == "low").astype(int)
    result["_order"] = np.arange(len(result))
    result = result.sort_values([*keys, "_list", "_order"], kind="stable")
    return result[columns].reset_index(drop=True)


def _readable(value: object) -> object:
    """A string cell that shows exactly which characters it holds; other values unchanged.

    Plain text is shown as is. A string that is empty, has leading/trailing whitespace, any
    non-printable character (newline, tab, ...), a backslash, or starts with a quote is shown as
    its Python repr, so ' the' -> "' the'" and '\\n\\n' -> "'\\\\n\\\\n'" stay distinguishable.
    """
    if not isinstance(value, str):
        return value
    plain = (
        value != "" and value == value.strip() and value.isprintable() and "\\" not in value and value[0] not in "'\""
    )
    return value if plain else repr(value)


def _cell(value: object, float_format: str) -> str:
    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format)
    text = str(_readable(value))
    # a pipe would end the markdown cell; '\|' renders as '|'
    return text.replace("|", "\\|")


def to_markdown(df: pd.DataFrame, title: str | None = None, float_format: str = ".4f") -> str:
    """A GitHub-flavoured markdown table of `df`, with an optional '## title' heading.

    Floats use `float_format`; strings are escaped as in `_readable` (whitespace tokens show as
    repr) and pipes are escaped. A non-default index is shown as columns.
    """
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    # cells are formatted here and number parsing is off, so a token such as '1.50' or '007'
    # stays the string it is instead of being reformatted as a number by tabulate
    rows = [[_cell(v, float_format) for v in row] for row in df.itertuples(index=False, name=None)]
    headers = [_cell(str(c), float_format) for c in df.columns]
    table = tabulate(
        rows,
        headers=headers,
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right" if n else "left" for n in numeric] if len(df.columns) else None,
    )
    text = f"## {title}\n\n{table}\n" if title else f"{table}\n"
    return text


def write_table(df: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str | None) -> None:
    """Write `df` as CSV (no index) and as a markdown table, each atomically, creating folders."""
    frame = df if isinstance(df.index, pd.RangeIndex) else df.reset_index()
    write_atomic(csv_path, lambda tmp: frame.to_csv(tmp, index=False))
    markdown = to_markdown(frame, title)
    write_atomic(md_path, lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
