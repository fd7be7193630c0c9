import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")

from tokenscope.io import write_json
from tokenscope.report.run_record import build_run_record
from tokenscope.workflow.jobs import run_script


def main(smk):
    write_json(build_run_record(list(smk.input), smk.params.config_files, smk.params.runtime), smk.output[0])


run_script(snakemake, main)
