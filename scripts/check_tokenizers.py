import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.io import write_json
from tokenscope.model.tokenizers import check_manifest_tokenizers
from tokenscope.workflow.jobs import run_script


def main(smk):
    write_json(check_manifest_tokenizers(list(smk.input)), smk.output[0])


run_script(snakemake, main)
