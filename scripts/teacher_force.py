import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.io import write_parquet
from tokenscope.scoring.teacher_forcing import run_teacher_forcing
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    scoring = smk.config["scoring"]  # batch_size and chunk_rows: speed and memory, not params
    model, tokenizer = load_rule_model(smk)
    tokens = run_teacher_forcing(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        span=smk.params.score_span,
        batch_size=scoring["batch_size"],
        n_alternatives=smk.params.n_alternatives,  # planning maps the deprecated scoring.top_k to it
        chunk_rows=scoring["chunk_rows"],
    )
    write_parquet(tokens, smk.output.tokens)


run_script(snakemake, main)
