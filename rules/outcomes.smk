# Outcomes of generations graded against the prompts' answers (tokenscope.outcomes): accuracy,
# pass@k, per-generation token statistics against correctness (AUROC, paired between checkpoints)
# and the entropy-performance fit over a group's checkpoint series; the prompt is the unit.
from tokenscope.workflow.planning import OUTCOME_FIGURES
from tokenscope.workflow.resources import scaled_mem_mb, scaled_runtime


# One DuckDB pass per model over its per-token table (GROUP BY prompt_id, sample) leaves one row
# per generation; the bootstrap resamples prompts over those rows, so memory and time grow with
# the token count only in DuckDB (60% of mem_mb, spilling beyond it).
rule outcome_stats:
    """Accuracy, pass@k, AUROC of token statistics for correctness, the entropy-performance fit."""
    input:
        tokens=get_outcome_tokens,
        generations=get_outcome_generations,
    output:
        tables=report(
            directory(paths.OUTCOME_TABLES),
            patterns=["{table}.csv"],
            caption="../report/outcome_tables.rst",
            category="Outcomes",
            subcategory="{prompt_set}",
            labels={"group": "{group}", "table": "{table}"},
        ),
        generations=paths.OUTCOME_GENERATIONS,
    log:
        "logs/outcome_stats/{prompt_set}/{group}.log",
    benchmark:
        "results/benchmarks/outcome_stats/{prompt_set}/{group}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: 2
    resources:
        cpus_per_task=2,
        mem_mb=scaled_mem_mb(1200, 0.2, max_mb=16000),
        runtime=scaled_runtime(10, 5),
    # Memory and threads come from the job: they cannot change the numbers.
    params:
        models=get_group_models,
        outcomes=get_outcome_settings,
    script:
        "../scripts/outcome_stats.py"


rule plot_outcomes:
    """The outcome figures of a group (their own job: a plotting setting reruns only them)."""
    input:
        tables=paths.OUTCOME_TABLES,
    output:
        outcomes=outcome_figure("outcomes", "outcome_accuracy.rst"),
        auroc=outcome_figure("auroc", "outcome_auroc.rst"),
        entropy_fit=outcome_figure("entropy_fit", "outcome_entropy_fit.rst"),
        vectors=[
            fill(
                paths.OUTCOME_FIGURE,
                figure=name,
                suffix=config["analysis"]["vector_format"],
            )
            for name in OUTCOME_FIGURES
        ],
    log:
        "logs/plot_outcomes/{prompt_set}/{group}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/outcome_figures.py"
