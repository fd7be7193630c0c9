import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.io import write_parquet
from tokenscope.scoring.options import n_alternatives_of
from tokenscope.scoring.teacher_forcing import run_teacher_forcing
from tokenscope.workflow.jobs import load_rule_model, run_script


def main(smk):
    scoring = smk.params.scoring
    model, tokenizer = load_rule_model(smk)
    tokens = run_teacher_forcing(
        model,
        tokenizer,
        load_prompt_set(smk.input.prompts, smk.params.insertion),
        model_name=smk.wildcards.model,
        prompt_set=smk.wildcards.prompt_set,
        span=scoring["score_span"],
        batch_size=scoring["batch_size"],
        n_alternatives=n_alternatives_of(scoring),  # or the deprecated scoring.top_k, with a warning
        chunk_rows=scoring["chunk_rows"],
    )
    write_parquet(tokens, smk.output.tokens)


run_script(snakemake, main)
