import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.analysis.tokens import describe_metric, qcut_bins, token_groups, write_table
from tokenscope.workflow.jobs import run_script


def main(smk):
    settings, out = smk.params.analysis, smk.output
    tokens = pd.read_parquet(smk.input[0])
    label = f"{smk.wildcards.model} on {smk.wildcards.source} ({smk.wildcards.prompt_set})"
    describe_metric(tokens, "entropy").to_csv(out.describe, index=False)
    describe_metric(tokens, "entropy", by=["model", "source", "prompt_set", "prompt_id"]).to_csv(
        out.describe_per_prompt, index=False
    )
    metric = settings["qcut_metric"]
    bins, samples = qcut_bins(tokens, metric, settings["n_bins"], settings["samples_per_bin"])
    write_table(bins, out.qcut_bins, out.qcut_bins_md, f"{metric} quantile bins: {label}")
    write_table(samples, out.qcut_samples, out.qcut_samples_md, f"tokens sampled from {metric} bins: {label}")
    for by, csv, md in (
        ("context_token", out.by_context_token, out.by_context_token_md),
        ("token", out.by_token, out.by_token_md),
    ):
        groups = token_groups(tokens, by=by, min_count=settings["min_count"], top_n=settings["top_n"])
        write_table(groups, csv, md, f"highest and lowest mean entropy by {by}: {label}")


run_script(snakemake, main)
