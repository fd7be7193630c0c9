import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.figures.internals import plot_convergence, plot_logit_lens
from tokenscope.figures.style import save_figure
from tokenscope.internals.options import DepthFigureOptions
from tokenscope.io import safe_file_name
from tokenscope.workflow.jobs import run_script


def main(smk):
    convergence = pd.read_parquet(smk.input.convergence)
    lens = pd.read_parquet(smk.input.logit_lens)
    out = Path(smk.output[0])
    out.mkdir(parents=True, exist_ok=True)
    model = smk.wildcards.model
    options = DepthFigureOptions.of_job(smk.params, smk.config)
    for prompt_id, rows in convergence.groupby("prompt_id", sort=False):
        name = safe_file_name(prompt_id)
        title = f"Latent state convergence ||x - x*||, {model}, prompt {prompt_id}"
        figure = plot_convergence(rows, title, chunk_tokens=options.chunk_tokens)
        save_figure(figure, out / f"convergence-{name}.png", smk.params.vector_format)
        prompt_lens = lens[lens["prompt_id"] == prompt_id]
        if len(prompt_lens):
            title = f"Logit lens: prediction entropy per layer, {model}, prompt {prompt_id}"
            figure = plot_logit_lens(prompt_lens, title, max_positions=options.max_positions)
            save_figure(figure, out / f"logit_lens-{name}.png", smk.params.vector_format)


run_script(snakemake, main)
