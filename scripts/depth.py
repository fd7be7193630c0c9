import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.internals.options import DepthOptions
from tokenscope.internals.tables import LOGIT_LENS_SCHEMA, TableLabels, run_depth
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    options = DepthOptions.of_job(smk.params, smk.config)
    model, tokenizer = load_rule_model(smk)
    convergence, lens = run_depth(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        TableLabels(model=smk.wildcards.model, prompt_set=smk.wildcards.prompt_set),
        options,
        chunk_rows=smk.config["scoring"]["chunk_rows"],  # memory only: not a param
    )
    write_parquet(convergence, smk.output.convergence)
    # Recurrent-depth models have no per-layer lens: an empty table keeps the outputs uniform.
    write_parquet(lens if lens is not None else LOGIT_LENS_SCHEMA.empty_table(), smk.output.logit_lens)


run_script(snakemake, main)
