import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from dataclasses import replace
from pathlib import Path

from tokenscope.finetune.training import FinetuneConfig, finetune
from tokenscope.workflow.jobs import run_script


def main(smk):
    config = FinetuneConfig.from_dict(dict(smk.params.finetune))
    if config.threads is None:  # pin the count the run used, so it is recorded with the checkpoints
        config = replace(config, threads=max(1, int(smk.threads)))
    finetune(Path(smk.input.manifest).parent, Path(smk.output[0]), config, progress=True)


run_script(snakemake, main)
