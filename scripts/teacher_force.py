import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import has_references, load_prompt_set
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.teacher_forcing import write_empty_reference_table, write_teacher_forcing
from tokenscope.workflow.jobs import load_rule_model, run_script
from tokenscope.workflow.shards import check_shard


def main(smk):
    options = ScoringOptions.of_job(smk.params, smk.config)  # batch_size, chunk_rows: from the config
    shard = smk.params.shard
    check_shard(smk.input.prompts, shard)
    prompts = load_prompt_set(smk.input.prompts, smk.params.insertion)[shard["start"] : shard["stop"]]
    if not has_references(prompts):  # a shard of a set with references elsewhere: no model to load
        write_empty_reference_table(smk.output.tokens)
        return
    model, tokenizer = load_rule_model(smk)
    write_teacher_forcing(  # a chunk of answers at a time: memory does not grow with the shard
        model,
        tokenizer,
        prompts,
        smk.output.tokens,
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        options=options,
    )


run_script(snakemake, main)
