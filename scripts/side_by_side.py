import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.dataset import duckdb_memory_mb
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.model.loading import load_prepared_tokenizer
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.side_by_side import PairContext, build_side_by_side
from tokenscope.workflow.jobs import run_script


def main(smk):
    tokenizer = load_prepared_tokenizer(Path(smk.input.manifest).parent)
    prompts = {p.id: p for p in load_prompt_set(smk.input.prompts, smk.params.insertion)}
    generations = list(smk.input.generations)  # A's and B's, or none where the set is not generated
    view = build_side_by_side(
        smk.input.pairs,
        smk.output.pages,
        smk.output.index,
        PairContext(
            model_a=smk.wildcards.model_a,
            model_b=smk.wildcards.model_b,
            prompt_set=smk.wildcards.prompt_set,
            source=smk.wildcards.source,
        ),
        VocabularyStrings.from_tokenizer(tokenizer),
        prompts=prompts,
        generations_a=generations[0] if generations else None,
        generations_b=generations[1] if generations else None,
        max_pages=smk.params.max_pages,
        listed=smk.params.prompt_ids,
        initial_metric=smk.params.metric,
        memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
