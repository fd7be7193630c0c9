import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

from tokenscope.duckdb_tables import connect, duckdb_memory_mb
from tokenscope.figures.entropy import files_by_model, plot_entropy_hist, plot_entropy_per_step
from tokenscope.figures.style import save_figure
from tokenscope.io import safe_file_name
from tokenscope.report.selection import choose_prompts, prompt_mean_entropy, rows_of_prompts
from tokenscope.workflow.jobs import run_script

COLUMNS = ["model", "source", "prompt_id", "sample", "step", "entropy"]


def main(smk):
    con = connect(duckdb_memory_mb(smk.resources.mem_mb))
    paths = list(smk.input.tokens)
    models = list(files_by_model(con, paths))
    # Prompts chosen by the mean entropy of the group's first model (report.selection).
    chosen = choose_prompts(prompt_mean_entropy(con, paths[0]), smk.params.max_prompts, smk.params.prompt_ids)
    tokens = rows_of_prompts(con, paths, COLUMNS, chosen).to_pandas()
    # the group's order (DuckDB returns rows in any order): models' colours and legends follow it
    rank = tokens["model"].map({model: i for i, model in enumerate(models)})
    tokens = tokens.assign(_rank=rank).sort_values(["_rank", "source", "sample", "step"]).drop(columns="_rank")
    con.close()
    out = Path(smk.output[0])
    out.mkdir(parents=True, exist_ok=True)
    view, prompt_set = smk.wildcards.view, smk.wildcards.prompt_set
    what = "own generations" if view == "generated" else "reference answers"
    for prompt_id, prompt_tokens in tokens.groupby("prompt_id", sort=True):
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
    print(f"figures of {len(chosen)} prompts in {out}", file=sys.stderr)


run_script(snakemake, main)
