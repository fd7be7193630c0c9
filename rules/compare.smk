# Checkpoint comparison: cross-scoring of model pairs on the same tokens (per-token KL both ways)
# and statistics over prompts per group.


rule cross_score:
    """Models a and b on the same tokens: logprobs, entropies, KL(a||b) and KL(b||a)."""
    input:
        manifest_a="results/models/{model_a}/manifest.json",
        manifest_b="results/models/{model_b}/manifest.json",
        tokens=get_pair_tokens,
    output:
        "results/pairs/{prompt_set}/{model_a}/{model_b}/{source}.parquet",
    log:
        "logs/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.log",
    benchmark:
        "results/benchmarks/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=config["runtime"]["mem_mb"],
        runtime=config["runtime"]["runtime_min"],
        gpu=plan.gpu,
    params:
        insertion=get_prompt_insertion,
        scoring=config["scoring"],
        runtime=plan.load_options,
    script:
        "../scripts/cross_score.py"


rule compare_group:
    """Statistics over prompts of a group's models against its base, and the trend figure."""
    input:
        own=get_compare_own_tokens,
        pairs=get_compare_pairs,
        tokenizers="results/comparison/{group}/tokenizers.json",
    output:
        tables=report(
            directory("results/comparison/{prompt_set}/{group}/tables"),
            patterns=["{table}.csv"],
            caption="../report/comparison_tables.rst",
            category="Checkpoint comparison",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "table": "{table}",
            },
        ),
        png=report(
            "results/comparison/{prompt_set}/{group}/trends.png",
            caption="../report/trends.rst",
            category="Checkpoint comparison",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "figure": "trends",
            },
        ),
        vector="results/comparison/{prompt_set}/{group}/trends."
        + config["analysis"]["vector_format"],
    log:
        "logs/compare_group/{prompt_set}/{group}.log",
    benchmark:
        "results/benchmarks/compare_group/{prompt_set}/{group}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=4000,
        runtime=30,
    params:
        models=get_group_models,
        comparison=config["comparison"],
        analysis=config["analysis"],
    script:
        "../scripts/compare_group.py"
