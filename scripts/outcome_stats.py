import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pyarrow as pa

from tokenscope.analysis.tokens import write_table
from tokenscope.duckdb_tables import connect, duckdb_memory_mb
from tokenscope.io import write_parquet
from tokenscope.outcomes.stats import OutcomeOptions, outcome_statistics
from tokenscope.workflow.jobs import run_script


def main(smk):
    settings, models = smk.params.outcomes, list(smk.params.models)
    options = OutcomeOptions(
        pass_at_k=tuple(settings["pass_at_k"]),
        high_entropy_quantile=settings["high_entropy_quantile"],
        n_boot=settings["n_boot"],
        ci=settings["ci"],
        seed=settings["seed"],
    )
    # Memory and threads cannot change the numbers: they come from the job, not from params.
    con = connect(memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb), threads=smk.threads)
    tokens = dict(zip(models, smk.input.tokens, strict=True))
    generations = dict(zip(models, smk.input.generations, strict=True))
    per_generation, tables = outcome_statistics(
        tokens, generations, models, options, prompt_set=smk.wildcards.prompt_set, con=con
    )
    write_parquet(pa.Table.from_pandas(per_generation, preserve_index=False), smk.output.generations)
    out = Path(smk.output.tables)
    for name, table in tables.items():
        write_table(table, out / f"{name}.csv", out / f"{name}.md", name.replace("_", " "))


run_script(snakemake, main)
