import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.io import gather_parquet
from tokenscope.outcomes.answers import AnswerOptions, gather_graded
from tokenscope.workflow.jobs import run_script


def main(smk):
    """Rules gather_tokens and gather_reference: the shards' per-token tables as they are; rule
    gather_generation: the shards' generations, graded against the prompt file's answers with the
    set's options."""
    if "tokens" in smk.output.keys():
        gather_parquet(smk.input.tokens, smk.output.tokens)
    if "generations" in smk.output.keys():
        expected = {prompt.id: prompt.answer for prompt in load_prompt_set(smk.input.prompts)}
        options = AnswerOptions.from_params(smk.params.answers)
        gather_graded(smk.input.generations, smk.output.generations, expected, options)


run_script(snakemake, main)
