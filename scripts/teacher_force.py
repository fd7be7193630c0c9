import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.io import write_parquet
from tokenscope.models import LoadOptions
from tokenscope.pipeline import load_checked, run_teacher_forcing
from tokenscope.prompts import load_prompt_set
from tokenscope.workflow import run_script


def main(smk):
    runtime, scoring = smk.params.runtime, smk.params.scoring
    model, tokenizer = load_checked(
        Path(smk.input.manifest).parent, LoadOptions(device=runtime["device"], dtype=runtime["dtype"])
    )
    tokens = run_teacher_forcing(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        span=scoring["score_span"],
        batch_size=scoring["batch_size"],
        top_k=scoring["top_k"],
        chunk_rows=scoring["chunk_rows"],
    )
    write_parquet(tokens, smk.output.tokens)


run_script(snakemake, main)
