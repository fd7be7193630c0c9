import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.figures.outcomes import plot_auroc, plot_entropy_fit, plot_outcomes
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    tables = Path(smk.input.tables)

    def read(name):
        return pd.read_csv(tables / f"{name}.csv")

    where = f"{smk.wildcards.prompt_set}, group {smk.wildcards.group}"
    ci = f"{smk.config['outcomes']['ci']:.0%} bootstrap CI over prompts"
    vector = smk.config["analysis"]["vector_format"]
    figures = {
        "outcomes": plot_outcomes(read("accuracy"), read("pass_at_k"), f"{where}: accuracy, pass@k, entropy ({ci})"),
        "auroc": plot_auroc(
            read("auroc"), read("auroc_paired"), f"{where}: token statistics against correctness ({ci})"
        ),
        "entropy_fit": plot_entropy_fit(
            read("entropy_fit_points"),
            read("entropy_fit"),
            read("entropy_fit_curve"),
            f"{where}: entropy-performance fit\n({ci})",
        ),
    }
    for name, figure in figures.items():
        save_figure(figure, getattr(smk.output, name), vector)


run_script(snakemake, main)
