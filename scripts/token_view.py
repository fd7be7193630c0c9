import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.duckdb_tables import duckdb_memory_mb
from tokenscope.report.options import TokenViewOptions
from tokenscope.report.pages import ViewInputs
from tokenscope.report.token_view import PageContext, TokenViewTables, build_token_view
from tokenscope.workflow.jobs import run_script


def main(smk):
    model, source = smk.wildcards.model, smk.wildcards.source
    view = build_token_view(
        TokenViewTables(
            tokens=smk.input.tokens, pairs=list(smk.input.pairs), generations=smk.input.generations or None
        ),
        smk.output.pages,
        smk.output.index,
        PageContext(model=model, prompt_set=smk.wildcards.prompt_set, source=source),
        ViewInputs.load(smk.input.manifest, smk.input.prompts, smk.params.insertion),
        TokenViewOptions.of_job(smk.params, smk.config),
        memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
