import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.figures.entropy import plot_entropy_hist, plot_entropy_per_step
from tokenscope.figures.style import save_figure
from tokenscope.io import safe_file_name
from tokenscope.workflow.jobs import run_script


def main(smk):
    tokens = pd.concat([pd.read_parquet(path) for path in smk.input.tokens], ignore_index=True)
    models = list(dict.fromkeys(tokens["model"]))
    out = Path(smk.output[0])
    out.mkdir(parents=True, exist_ok=True)
    view, prompt_set = smk.wildcards.view, smk.wildcards.prompt_set
    what = "own generations" if view == "generated" else "reference answers"
    for prompt_id, prompt_tokens in tokens.groupby("prompt_id", sort=False):
        name = safe_file_name(prompt_id)
        title = f"Entropy per step, prompt {prompt_id} of {prompt_set} ({what})"
        save_figure(
            plot_entropy_per_step(prompt_tokens, title, models),
            out / f"entropy_steps-{name}.png",
            smk.params.vector_format,
        )
        title = f"Entropy distribution, prompt {prompt_id} of {prompt_set} ({what})"
        save_figure(
            plot_entropy_hist(prompt_tokens, title, bins=30), out / f"entropy_hist-{name}.png", smk.params.vector_format
        )


run_script(snakemake, main)
