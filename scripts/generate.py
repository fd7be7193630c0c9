import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.generation.run import run_generation
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.io import write_parquet
from tokenscope.scoring.options import n_alternatives_of
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    generation = smk.params.generation
    model, tokenizer = load_rule_model(smk)
    generations, tokens = run_generation(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        n_samples=generation["n_samples"],
        seed=generation["seed"],
        sampling=dict(generation["sampling"]),
        batch_size=generation["batch_size"],
        # scoring.n_alternatives, or the deprecated scoring.top_k (warns where planning did not map it)
        n_alternatives=n_alternatives_of(smk.params.scoring),
        truncate_to_context=generation.get("truncate_to_context", False),
    )
    write_parquet(tokens, smk.output.tokens)
    write_parquet(generations, smk.output.generations)


run_script(snakemake, main)
