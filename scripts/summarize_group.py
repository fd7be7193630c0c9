import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.analysis.tokens import describe_metric, write_table
from tokenscope.workflow.jobs import run_script


def main(smk):
    tokens = pd.concat([pd.read_parquet(path) for path in smk.input.tokens], ignore_index=True)
    w = smk.wildcards
    write_table(
        describe_metric(tokens, "entropy"),
        smk.output.describe,
        smk.output.describe_md,
        f"entropy (nats) of group {w.group} on {w.prompt_set}, {w.view} tokens",
    )
    describe_metric(tokens, "entropy", by=["model", "source", "prompt_set", "prompt_id"]).to_csv(
        smk.output.describe_per_prompt, index=False
    )


run_script(snakemake, main)
