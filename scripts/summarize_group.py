import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.analysis.tokens import describe_metric, write_table
from tokenscope.duckdb_tables import connect, duckdb_memory_mb
from tokenscope.io import write_atomic
from tokenscope.workflow.jobs import run_script


def main(smk):
    # the models' token tables are scanned together by DuckDB (entropy and the keys only)
    con = connect(memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb), threads=smk.threads)
    con.execute("SET enable_progress_bar = false")  # no progress bars in the job's log
    tokens, w = list(smk.input.tokens), smk.wildcards
    write_table(
        describe_metric(tokens, "entropy", con=con),
        smk.output.describe,
        smk.output.describe_md,
        f"entropy (nats) of group {w.group} on {w.prompt_set}, {w.view} tokens",
    )
    per_prompt = describe_metric(tokens, "entropy", by=["model", "source", "prompt_set", "prompt_id"], con=con)
    write_atomic(smk.output.describe_per_prompt, lambda tmp: per_prompt.to_csv(tmp, index=False))


run_script(snakemake, main)
