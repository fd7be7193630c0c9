import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
import pandas as pd

from tokenscope.figures.entropy import plot_entropy_hist
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    tokens = pd.concat([pd.read_parquet(path) for path in smk.input.tokens], ignore_index=True)
    w = smk.wildcards
    what = "own generations" if w.view == "generated" else "reference answers"
    title = f"Entropy of all tokens, {w.prompt_set} ({what}), {tokens['prompt_id'].nunique()} prompts"
    vector_format = smk.output.vector.rsplit(".", 1)[-1]
    save_figure(plot_entropy_hist(tokens, title, bins=50), smk.output.png, vector_format)


run_script(snakemake, main)
