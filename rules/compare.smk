# Checkpoint comparison: cross-scoring of model pairs on the same tokens (per-token KL both ways)
# and statistics over prompts per group.


rule cross_score:
    """Models a and b on the same tokens: logprobs, entropies, KL(a||b) and KL(b||a)."""
    input:
        manifest_a=fill(paths.MANIFEST, model="{model_a}"),
        manifest_b=fill(paths.MANIFEST, model="{model_b}"),
        tokens=get_pair_tokens,
    output:
        paths.PAIR,
    log:
        "logs/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.log",
    benchmark:
        "results/benchmarks/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"]),
        runtime=model_runtime(config["runtime"]["runtime_min"]),
        gpu=plan.gpu,
    # What changes the table: the reference answers' span (none for generated tokens), the
    # alternatives stored per token for both models (topk_*_a, topk_*_b: the side-by-side view);
    # scoring.batch_size and chunk_rows (speed, memory) the script reads from the config.
    params:
        insertion=get_prompt_insertion,
        score_span=get_pair_score_span,
        n_alternatives=ScoringOptions.from_config(config).n_alternatives,
        schema=SCHEMA_VERSION,  # a new table schema reruns existing results
        runtime=plan.load_options,
    script:
        "../scripts/cross_score.py"


# compare_group reads its tables through DuckDB (60% of mem_mb; sorts, joins and aggregates spill
# beyond it) and bootstraps per-prompt summaries whose size does not depend on the token count; the
# exact quantiles hold 8 bytes per token row of one model at a time. Measured on 4 models of 10^7
# token rows each (2.9 GB of parquet): peak RSS 1.6 GB (torch imported by the job helpers: 0.3 GB).
# Its params are the settings that change its numbers; memory and threads come from the job.
COMPARE_SETTINGS = (
    "n_boot",
    "n_perm",
    "ci",
    "alpha",
    "correction",
    "seed",
    "quantile_bins",
)


rule compare_group:
    """Statistics over prompts of a group's models against its base (the figure: plot_trends)."""
    input:
        own=get_compare_own_tokens,
        pairs=get_compare_pairs,
        tokenizers=paths.TOKENIZERS,
        # weights_sha256: models with identical weights are flagged in the tables
        manifests=get_group_manifests,
    output:
        tables=report(
            directory(paths.COMPARISON_TABLES),
            patterns=["{table}.csv"],
            caption="../report/comparison_tables.rst",
            category="Checkpoint comparison",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "table": "{table}",
            },
        ),
    log:
        "logs/compare_group/{prompt_set}/{group}.log",
    benchmark:
        "results/benchmarks/compare_group/{prompt_set}/{group}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: 2
    resources:
        cpus_per_task=2,
        mem_mb=scaled_mem_mb(1500, 0.2, max_mb=16000),
        runtime=scaled_runtime(10, 5),
    params:
        models=get_group_models,
        comparison={key: config["comparison"][key] for key in COMPARE_SETTINGS},
        analysis={key: config["analysis"][key] for key in ("min_count", "top_n")},
    script:
        "../scripts/compare_group.py"


rule plot_trends:
    """The trend figure of a group's comparison (its own job: a plotting setting reruns only it)."""
    input:
        tables=paths.COMPARISON_TABLES,
    output:
        png=report(
            fill(paths.TRENDS, suffix="png"),
            caption="../report/trends.rst",
            category="Checkpoint comparison",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "figure": "trends",
            },
        ),
        vector=fill(paths.TRENDS, suffix=config["analysis"]["vector_format"]),
    log:
        "logs/plot_trends/{prompt_set}/{group}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/plot_trends.py"
