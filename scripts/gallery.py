import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import shutil

from tokenscope.workflow.jobs import run_script


def main(smk):
    for source, target in zip(smk.params.sources, smk.output, strict=True):
        shutil.copyfile(source, target)


run_script(snakemake, main)
