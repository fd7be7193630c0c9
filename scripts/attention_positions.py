import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.internals.tables import run_attention_positions
from tokenscope.io import write_parquet
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    model, tokenizer = load_rule_model(smk)
    table = run_attention_positions(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        heads=[tuple(pair) for pair in smk.params.heads],
        prompt_ids=smk.params.prompt_ids,
    )
    write_parquet(table, smk.output[0])


run_script(snakemake, main)
