import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.generation.run import write_generation
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.workflow.jobs import load_rule_model, run_script
from tokenscope.workflow.shards import check_shard


def main(smk):
    # params carry what changes the shard's results; speed knobs come from the config.
    shard, generation = smk.params.shard, smk.params.generation
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
        n_samples=generation["n_samples"],
        seed=generation["seed"],
        sampling=dict(generation["sampling"]),
        batch_size=smk.config["generation"]["batch_size"],
        n_alternatives=smk.params.n_alternatives,
        truncate_to_context=generation.get("truncate_to_context", False),
    )


run_script(snakemake, main)
