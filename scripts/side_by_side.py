import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.report.pages import view_inputs, view_options
from tokenscope.report.side_by_side import PairContext, build_side_by_side
from tokenscope.workflow.jobs import run_script


def main(smk):
    vocabulary, prompts = view_inputs(smk.input.manifest, smk.input.prompts, smk.params.insertion)
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
        vocabulary,
        prompts=prompts,
        generations_a=generations[0] if generations else None,
        generations_b=generations[1] if generations else None,
        **view_options(smk.params, smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
