import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.io import write_parquet
from tokenscope.models import LoadOptions
from tokenscope.pipeline import load_checked, run_generation
from tokenscope.prompts import load_prompt_set
from tokenscope.workflow import run_script


def main(smk):
    runtime, generation = smk.params.runtime, smk.params.generation
    model, tokenizer = load_checked(
        Path(smk.input.manifest).parent, LoadOptions(device=runtime["device"], dtype=runtime["dtype"])
    )
    generations, tokens = run_generation(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        n_samples=generation["n_samples"],
        seed=generation["seed"],
        sampling=dict(generation["sampling"]),
        batch_size=generation["batch_size"],
        top_k=smk.params.scoring["top_k"],
    )
    write_parquet(tokens, smk.output.tokens)
    write_parquet(generations, smk.output.generations)


run_script(snakemake, main)
