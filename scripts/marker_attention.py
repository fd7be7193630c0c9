import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.internals.tables import run_marker_attention
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    batch_size = smk.config["internals"]["marker_attention"]["batch_size"]  # speed only: not a param
    model, tokenizer = load_rule_model(smk)
    table = run_marker_attention(
        model,
        tokenizer,
        pd.read_parquet(smk.input.generations),
        pd.read_parquet(smk.input.tokens, columns=["prompt_id", "sample", "step", "position", "token", "entropy"]),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        markers=smk.params.markers,
        layers=smk.params.layers,
        batch_size=batch_size,
    )
    write_parquet(table, smk.output[0])


run_script(snakemake, main)
