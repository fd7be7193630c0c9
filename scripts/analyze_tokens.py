import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.analysis.tokens import describe_metric, qcut_bins, token_groups, write_table
from tokenscope.duckdb_tables import connect, duckdb_memory_mb
from tokenscope.io import write_atomic
from tokenscope.workflow.jobs import run_script

GROUP = ["model", "source", "prompt_set"]


def main(smk):
    # params: only the analysis settings that change these tables; DuckDB gets 60% of mem_mb
    settings, out, tokens = smk.params, smk.output, smk.input.tokens
    con = connect(memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb), threads=smk.threads)
    con.execute("SET enable_progress_bar = false")  # no progress bars in the job's log
    label = f"{smk.wildcards.model} on {smk.wildcards.source} ({smk.wildcards.prompt_set})"
    for by, csv in ((GROUP, out.describe), ([*GROUP, "prompt_id"], out.describe_per_prompt)):
        table = describe_metric(tokens, "entropy", by=by, con=con)
        write_atomic(csv, lambda tmp, table=table: table.to_csv(tmp, index=False))
    metric = settings.qcut_metric
    bins, samples = qcut_bins(tokens, metric, settings.n_bins, settings.samples_per_bin, con=con)
    write_table(bins, out.qcut_bins, out.qcut_bins_md, f"{metric} quantile bins: {label}")
    write_table(samples, out.qcut_samples, out.qcut_samples_md, f"tokens sampled from {metric} bins: {label}")
    for by, csv, md in (
        ("context_token", out.by_context_token, out.by_context_token_md),
        ("token", out.by_token, out.by_token_md),
    ):
        groups = token_groups(tokens, by=by, min_count=settings.min_count, top_n=settings.top_n, con=con)
        write_table(groups, csv, md, f"highest and lowest mean entropy by {by}: {label}")


run_script(snakemake, main)
