import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.internals.measures import RecurrentDepth
from tokenscope.internals.tables import LOGIT_LENS_SCHEMA, run_depth
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    recurrent = RecurrentDepth(**smk.params.recurrent) if smk.params.recurrent else None
    model, tokenizer = load_rule_model(smk)
    convergence, lens = run_depth(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        prompt_ids=smk.params.prompt_ids,
        recurrent=recurrent,
        chunk_rows=smk.config["scoring"]["chunk_rows"],  # memory only: not a param
    )
    write_parquet(convergence, smk.output.convergence)
    # Recurrent-depth models have no per-layer lens: an empty table keeps the outputs uniform.
    write_parquet(lens if lens is not None else LOGIT_LENS_SCHEMA.empty_table(), smk.output.logit_lens)


run_script(snakemake, main)
