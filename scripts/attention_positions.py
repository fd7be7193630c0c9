import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.internals.options import AttentionPositionsOptions
from tokenscope.internals.tables import TableLabels, run_attention_positions
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    model, tokenizer = load_rule_model(smk)
    table = run_attention_positions(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        TableLabels(model=smk.wildcards.model, prompt_set=smk.wildcards.prompt_set),
        AttentionPositionsOptions.of_job(smk.params, smk.config),
    )
    write_parquet(table, smk.output[0])


run_script(snakemake, main)
