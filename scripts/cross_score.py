import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pyarrow.parquet as pq

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import generation_file_sequences, reference_sequences, sequence_chunks
from tokenscope.model.loading import load_model
from tokenscope.scoring.cross_scoring import write_pair
from tokenscope.workflow.jobs import run_script, runtime_load_options


def main(smk):
    scoring = smk.config["scoring"]  # batch_size and chunk_rows: speed and memory, not params
    options = runtime_load_options(smk.params.runtime)
    model_a, tokenizer_a = load_model(Path(smk.input.manifest_a).parent, options)
    model_b, tokenizer_b = load_model(Path(smk.input.manifest_b).parent, options)
    if smk.wildcards.source == "reference":  # a prompt set's reference answers
        prompts = load_prompt_set(smk.input.tokens, smk.params.insertion)
        sequences = reference_sequences(tokenizer_a, prompts, smk.params.score_span)
        n_sequences = len(sequences)
    else:  # a model's generations, streamed from its table
        sequences = generation_file_sequences(smk.input.tokens)
        n_sequences = pq.ParquetFile(smk.input.tokens).metadata.num_rows
    write_pair(
        model_a,
        tokenizer_a,
        model_b,
        tokenizer_b,
        sequence_chunks(sequences),
        smk.output[0],
        model_a_name=smk.wildcards.model_a,
        model_b_name=smk.wildcards.model_b,
        source=smk.wildcards.source,
        prompt_set=smk.wildcards.prompt_set,
        n_alternatives=smk.params.n_alternatives,
        batch_size=scoring["batch_size"],
        chunk_rows=scoring["chunk_rows"],
        n_sequences=n_sequences,
    )


run_script(snakemake, main)
