import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.internals.options import MarkerAttentionOptions
from tokenscope.internals.tables import TableLabels, run_marker_attention
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    options = MarkerAttentionOptions.of_job(smk.params, smk.config)
    model, tokenizer = load_rule_model(smk)
    table = run_marker_attention(
        model,
        tokenizer,
        pd.read_parquet(smk.input.generations),
        pd.read_parquet(smk.input.tokens, columns=["prompt_id", "sample", "step", "position", "token", "entropy"]),
        TableLabels(model=smk.wildcards.model, prompt_set=smk.wildcards.prompt_set),
        options,
    )
    write_parquet(table, smk.output[0])


run_script(snakemake, main)
