import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.figures.internals import plot_attention_positions
from tokenscope.figures.style import save_figure
from tokenscope.io import safe_file_name
from tokenscope.workflow.jobs import run_script


def main(smk):
    with_filler = pd.read_parquet(smk.input.with_filler)
    without = pd.read_parquet(smk.input.without)
    out = Path(smk.output[0])
    out.mkdir(parents=True, exist_ok=True)
    for prompt_id, rows in with_filler.groupby("prompt_id", sort=False):
        title = f"{smk.wildcards.model}, prompt {prompt_id}: {smk.wildcards.prompt_set} vs its source set"
        figure = plot_attention_positions(rows, without[without["prompt_id"] == prompt_id], title)
        save_figure(figure, out / f"attention_positions-{safe_file_name(prompt_id)}.png", smk.params.vector_format)


run_script(snakemake, main)
