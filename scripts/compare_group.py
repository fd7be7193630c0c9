import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import json
import logging
from pathlib import Path

from tokenscope.analysis.comparison import (
    StatsOptions,
    compare_group,
    identical_weights_note,
    write_comparison_tables,
)
from tokenscope.analysis.stats import BootstrapOptions, TokenChangeOptions
from tokenscope.duckdb_tables import connect, duckdb_memory_mb
from tokenscope.workflow.jobs import run_script


def main(smk):
    settings, analysis = smk.params.comparison, smk.params.analysis
    options = StatsOptions(
        boot=BootstrapOptions(
            n_boot=settings["n_boot"], ci=settings["ci"], seed=settings["seed"], bins=settings["quantile_bins"]
        ),
        n_perm=settings["n_perm"],
        alpha=settings["alpha"],
        correction=settings["correction"],
        changes=TokenChangeOptions(min_count=analysis["min_count"], top_n=analysis["top_n"]),
    )
    manifests = {}
    for path in smk.input.manifests:
        manifest = json.loads(Path(path).read_text())
        manifests[manifest["model"]] = manifest
    note = identical_weights_note(smk.params.models, manifests)
    if note:
        logging.getLogger("tokenscope").warning("%s", note)
    # Memory and threads cannot change the numbers: they come from the job, not from params.
    con = connect(memory_limit_mb=duckdb_memory_mb(smk.resources.mem_mb), threads=smk.threads)
    tables = compare_group(
        list(smk.input.own), list(smk.input.pairs), smk.params.models, options, con=con, manifests=manifests
    )
    write_comparison_tables(tables, smk.output.tables, note)


run_script(snakemake, main)
