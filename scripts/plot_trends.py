import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.figures.comparison import plot_trends
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    trends = pd.read_csv(Path(smk.input.tables) / "trends.csv")
    prompt_set, group = smk.wildcards.prompt_set, smk.wildcards.group
    title = (
        f"{prompt_set}, group {group}: checkpoints against the base (index 0), "
        f"{smk.config['comparison']['ci']:.0%} bootstrap CI over prompts"
    )
    save_figure(plot_trends(trends, title), smk.output.png, smk.output.vector.rsplit(".", 1)[-1])


run_script(snakemake, main)
