import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.duckdb_tables import duckdb_memory_mb
from tokenscope.report.options import SideBySideOptions
from tokenscope.report.pages import ViewInputs
from tokenscope.report.side_by_side import PairContext, PairViewTables, build_side_by_side
from tokenscope.workflow.jobs import run_script


def main(smk):
    generations = list(smk.input.generations)  # A's and B's, or none where the set is not generated
    view = build_side_by_side(
        PairViewTables(
            pairs=smk.input.pairs,
            generations_a=generations[0] if generations else None,
            generations_b=generations[1] if generations else None,
        ),
        smk.output.pages,
        smk.output.index,
        PairContext(
            model_a=smk.wildcards.model_a,
            model_b=smk.wildcards.model_b,
            prompt_set=smk.wildcards.prompt_set,
            source=smk.wildcards.source,
        ),
        ViewInputs.load(smk.input.manifest, smk.input.prompts, smk.params.insertion),
        SideBySideOptions.of_job(smk.params, smk.config),
        memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
