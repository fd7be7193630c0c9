import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from tokenscope.duckdb_tables import connect, duckdb_memory_mb, parquet_sql
from tokenscope.figures.entropy import entropy_histograms_of_files, files_by_model, plot_entropy_histograms
from tokenscope.figures.style import save_figure
from tokenscope.workflow.jobs import run_script


def main(smk):
    con = connect(duckdb_memory_mb(smk.resources.mem_mb))
    files = files_by_model(con, list(smk.input.tokens))
    histograms = entropy_histograms_of_files(con, files, bins=50)
    [(n_prompts,)] = con.sql(f"SELECT count(DISTINCT prompt_id) FROM {parquet_sql(list(smk.input.tokens))}").fetchall()
    con.close()
    w = smk.wildcards
    what = "own generations" if w.view == "generated" else "reference answers"
    title = f"Entropy of all tokens, {w.prompt_set} ({what}), {n_prompts} prompts"
    vector_format = smk.output.vector.rsplit(".", 1)[-1]
    save_figure(plot_entropy_histograms(histograms, title), smk.output.png, vector_format)


run_script(snakemake, main)
