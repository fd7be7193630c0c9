"""Checkpoint comparison of one group on one prompt set: its tables (the trend figure: figures.comparison).

Inputs are the workflow's own outputs: each model's per-token table of its own generations, and
the pair tables (cross-scoring) of the base (the group's first model) with each other model on
the base's generations. The unit of every statistic is the prompt (docs/comparison.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from tokenscope.analysis.stats import (
    BootstrapOptions,
    Correction,
    bootstrap_summary,
    checkpoint_trends,
    paired_tests,
    per_unit_means,
    token_changes,
)

UNIT = ("prompt_id",)


@dataclass(frozen=True)
class StatsOptions:
    n_boot: int = 2000
    n_perm: int = 10_000
    ci: float = 0.95
    alpha: float = 0.05
    correction: Correction = "holm"
    seed: int = 0
    min_count: int = 5
    top_n: int = 20


def base_text_tokens(pairs: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Per-token rows of every model on the base's text: the base from entropy_a, others from entropy_b."""
    base = models[0]
    first = pairs[pairs["model_b"] == models[1]] if len(models) > 1 else pairs.iloc[:0]
    keys = ["prompt_id", "sample", "position", "token_id"]
    frames = [first[keys].assign(model=base, entropy=first["entropy_a"], logprob=first["logprob_a"])]
    for model in models[1:]:
        rows = pairs[pairs["model_b"] == model]
        frames.append(rows[keys].assign(model=model, entropy=rows["entropy_b"], logprob=rows["logprob_b"]))
    return pd.concat(frames, ignore_index=True)


def compare_group(
    own_tokens: pd.DataFrame, pairs: pd.DataFrame, models: Sequence[str], options: StatsOptions
) -> dict[str, pd.DataFrame]:
    """All comparison tables of a group (its first model is the base).

    own_tokens: per-token tables of each model on its own generations, concatenated.
    pairs: pair tables (base, other) on the base's generations, concatenated.
    Returns named tables: summary, paired_tests, trends, and changed_<model>_<what> per checkpoint.
    """
    boot: BootstrapOptions = {"n_boot": options.n_boot, "ci": options.ci, "seed": options.seed}
    # Token strings for the changed-token tables: the pairs score the base's own generations.
    strings = own_tokens.loc[
        own_tokens["model"] == models[0], ["prompt_id", "sample", "position", "token", "context_token"]
    ]
    pairs = pairs.merge(strings, on=["prompt_id", "sample", "position"], how="left", validate="many_to_one")
    summary = bootstrap_summary(own_tokens, ["entropy", "prob"], unit_columns=UNIT, group_columns=["model"], **boot)
    summary.insert(0, "tokens", "own generations")
    kl = bootstrap_summary(
        pairs, ["kl_a_b", "kl_b_a", "logprob_diff"], unit_columns=UNIT, group_columns=["model_b"], **boot
    )
    kl = kl.rename(columns={"model_b": "model"})
    kl.insert(0, "tokens", "base's generations")
    on_base_text = base_text_tokens(pairs, models)
    tests = []
    for label, frame in (("own generations", own_tokens), ("base's generations", on_base_text)):
        table = paired_tests(
            per_unit_means(frame, "entropy", unit_columns=UNIT),
            models[0],
            list(models[1:]),
            n_perm=options.n_perm,
            alpha=options.alpha,
            correction=options.correction,
            **boot,
        )
        tests.append(table.assign(metric="mean entropy per prompt", tokens=label))
    trends = pd.concat(
        [
            checkpoint_trends(own_tokens, list(models), overlap=False, unit_columns=UNIT, **boot).assign(
                tokens="own generations"
            ),
            checkpoint_trends(on_base_text, list(models), pairs=pairs, overlap=True, unit_columns=UNIT, **boot).assign(
                tokens="base's generations"
            ),
        ],
        ignore_index=True,
    )
    tables = {
        "summary": pd.concat([summary, kl], ignore_index=True),
        "paired_tests": pd.concat(tests, ignore_index=True),
        "trends": trends,
    }
    for model in models[1:]:
        rows = pairs[pairs["model_b"] == model].assign(entropy_diff=lambda f: f["entropy_b"] - f["entropy_a"])
        for by, name in ((["token"], "by_token"), (["context_token", "token"], "by_context_token")):
            tables[f"changed_{model}_{name}"] = pd.concat(
                [
                    token_changes(
                        rows, value, by=by, unit_columns=UNIT, min_count=options.min_count, top_n=options.top_n, **boot
                    )
                    .rename(columns={f"mean_{value}": "mean_change"})
                    .assign(metric=value)
                    for value in ("entropy_diff", "logprob_diff", "kl_a_b")
                ],
                ignore_index=True,
            )
    return tables
