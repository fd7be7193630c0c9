import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from dataclasses import replace

from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.run import write_generation
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.scoring.options import ScoringOptions
from tokenscope.workflow.jobs import load_rule_model, run_script
from tokenscope.workflow.shards import check_shard


def main(smk):
    # params carry what changes the shard's results; speed knobs come from the config.
    shard = smk.params.shard
    options = GenerationOptions.of_job(smk.params.generation, smk.config)
    # Of the scoring settings only n_alternatives changes a generation: the job's one scoring param.
    scoring = replace(ScoringOptions.from_config(smk.config), n_alternatives=smk.params.n_alternatives)
    check_shard(smk.input.prompts, shard)
    prompts = load_prompt_set(smk.input.prompts, smk.params.insertion)[shard["start"] : shard["stop"]]
    model, tokenizer = load_rule_model(smk)
    write_generation(
        model,
        tokenizer,
        prompts,
        generations_path=smk.output.generations,
        tokens_path=smk.output.tokens,
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        options=options,
        scoring=scoring,
    )


run_script(snakemake, main)
