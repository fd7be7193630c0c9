import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pyarrow.parquet as pq

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.inputs.sequences import generation_file_sequences, reference_sequences, sequence_chunks
from tokenscope.model.loading import load_model
from tokenscope.scoring.cross_scoring import write_pair
from tokenscope.scoring.options import ScoringOptions
from tokenscope.workflow.jobs import run_script, runtime_load_options


def main(smk):
    # score_span is a param of pairs on reference answers only (None on generated tokens, whose
    # pairs do not depend on it); batch_size and chunk_rows (speed, memory) come from the config.
    span = smk.params.score_span or smk.config["scoring"]["score_span"]
    scoring = ScoringOptions.of_job({"n_alternatives": smk.params.n_alternatives, "score_span": span}, smk.config)
    load_options = runtime_load_options(smk.params.runtime)
    model_a, tokenizer_a = load_model(Path(smk.input.manifest_a).parent, load_options)
    model_b, tokenizer_b = load_model(Path(smk.input.manifest_b).parent, load_options)
    if smk.wildcards.source == "reference":  # a prompt set's reference answers
        prompts = load_prompt_set(smk.input.tokens, smk.params.insertion)
        sequences = reference_sequences(tokenizer_a, prompts, scoring.score_span)
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
        options=scoring,
        n_sequences=n_sequences,
    )


run_script(snakemake, main)
