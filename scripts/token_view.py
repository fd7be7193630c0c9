import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.dataset import duckdb_memory_mb
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.model.loading import load_prepared_tokenizer
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.token_view import PageContext, build_token_view
from tokenscope.workflow.jobs import run_script


def main(smk):
    model, source = smk.wildcards.model, smk.wildcards.source
    tokenizer = load_prepared_tokenizer(Path(smk.input.manifest).parent)
    prompts = {p.id: p for p in load_prompt_set(smk.input.prompts, smk.params.insertion)}
    view = build_token_view(
        smk.input.tokens,
        smk.output.pages,
        smk.output.index,
        PageContext(model=model, prompt_set=smk.wildcards.prompt_set, source=source),
        VocabularyStrings.from_tokenizer(tokenizer),
        pair_paths=list(smk.input.pairs),
        prompts=prompts,
        generations_path=smk.input.generations or None,
        max_pages=smk.params.max_pages,
        listed=smk.params.prompt_ids,
        initial_metric=smk.params.metric,
        memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
