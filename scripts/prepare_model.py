import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.model.sources import ModelSpec, prepare_model
from tokenscope.workflow.jobs import run_script


def main(smk):
    source = ModelSpec.from_config(smk.wildcards.model, dict(smk.params.source))
    prepare_model(source, Path(smk.output[0]).parent)


run_script(snakemake, main)
