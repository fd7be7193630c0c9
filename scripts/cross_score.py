import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import generation_table_sequences, reference_sequences
from tokenscope.io import write_parquet
from tokenscope.model.loading import load_model
from tokenscope.scoring.cross_scoring import score_pair
from tokenscope.workflow.jobs import run_script, runtime_load_options

# The columns of a generations table that make its sequences.
SEQUENCE_COLUMNS = ["prompt_id", "sample", "prompt_token_ids", "token_ids"]


def main(smk):
    scoring = smk.config["scoring"]  # batch_size and chunk_rows: speed and memory, not params
    options = runtime_load_options(smk.params.runtime)
    model_a, tokenizer_a = load_model(Path(smk.input.manifest_a).parent, options)
    model_b, tokenizer_b = load_model(Path(smk.input.manifest_b).parent, options)
    if smk.wildcards.source == "reference":
        prompts = load_prompt_set(smk.input.tokens, smk.params.insertion)
        sequences = reference_sequences(tokenizer_a, prompts, smk.params.score_span)
    else:
        sequences = generation_table_sequences(pd.read_parquet(smk.input.tokens, columns=SEQUENCE_COLUMNS))
    table = score_pair(
        model_a,
        tokenizer_a,
        model_b,
        tokenizer_b,
        sequences,
        model_a_name=smk.wildcards.model_a,
        model_b_name=smk.wildcards.model_b,
        source=smk.wildcards.source,
        prompt_set=smk.wildcards.prompt_set,
        n_alternatives=smk.params.n_alternatives,
        batch_size=scoring["batch_size"],
        chunk_rows=scoring["chunk_rows"],
    )
    write_parquet(table, smk.output[0])


run_script(snakemake, main)
