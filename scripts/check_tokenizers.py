import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.compare import check_same_tokenizer
from tokenscope.io import write_json
from tokenscope.workflow import run_script


def main(smk):
    write_json(check_same_tokenizer(list(smk.input)), smk.output[0])


run_script(snakemake, main)
