import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.workflow.jobs import run_script
from tokenscope.workflow.shards import gather_parquet


def main(smk):
    for table in ("generations", "tokens"):
        gather_parquet(smk.input[table], smk.output[table])


run_script(snakemake, main)
