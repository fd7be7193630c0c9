import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.figures.internals import plot_marker_attention
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    frame = pd.concat([pd.read_parquet(path) for path in smk.input], ignore_index=True)
    title = f"{smk.wildcards.prompt_set}: generated tokens, mean ± 1 sd over prompts and samples"
    figure = plot_marker_attention(frame, smk.params.markers, title, condition="model")
    save_figure(figure, smk.output.png, smk.output.vector.rsplit(".", 1)[-1])


run_script(snakemake, main)
