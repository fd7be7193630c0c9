import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.analysis.comparison import StatsOptions, compare_group
from tokenscope.analysis.tokens import write_table
from tokenscope.figures.comparison import plot_trends
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    settings, analysis = smk.params.comparison, smk.params.analysis
    options = StatsOptions(
        n_boot=settings["n_boot"],
        n_perm=settings["n_perm"],
        ci=settings["ci"],
        alpha=settings["alpha"],
        correction=settings["correction"],
        seed=settings["seed"],
        min_count=analysis["min_count"],
        top_n=analysis["top_n"],
    )
    own = pd.concat([pd.read_parquet(path) for path in smk.input.own], ignore_index=True)
    pairs = pd.concat([pd.read_parquet(path) for path in smk.input.pairs], ignore_index=True)
    tables = compare_group(own, pairs, smk.params.models, options)
    out = Path(smk.output.tables)
    for name, table in tables.items():
        write_table(table, out / f"{name}.csv", out / f"{name}.md", name.replace("_", " "))
    prompt_set, group = smk.wildcards.prompt_set, smk.wildcards.group
    title = (
        f"{prompt_set}, group {group}: checkpoints against the base (index 0), "
        f"{options.ci:.0%} bootstrap CI over prompts"
    )
    save_figure(plot_trends(tables["trends"], title), smk.output.png, smk.output.vector.rsplit(".", 1)[-1])


run_script(snakemake, main)
