import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.report.pages import view_inputs, view_options
from tokenscope.report.token_view import PageContext, build_token_view
from tokenscope.workflow.jobs import run_script


def main(smk):
    model, source = smk.wildcards.model, smk.wildcards.source
    vocabulary, prompts = view_inputs(smk.input.manifest, smk.input.prompts, smk.params.insertion)
    view = build_token_view(
        smk.input.tokens,
        smk.output.pages,
        smk.output.index,
        PageContext(model=model, prompt_set=smk.wildcards.prompt_set, source=source),
        vocabulary,
        pair_paths=list(smk.input.pairs),
        prompts=prompts,
        generations_path=smk.input.generations or None,
        **view_options(smk.params, smk.resources.mem_mb),
    )
    print(f"{len(view.pages)} pages of {view.n_sequences} sequences in {smk.output.pages}", file=sys.stderr)


run_script(snakemake, main)
