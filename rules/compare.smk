# Checkpoint comparison: an optional finetune series, cross-scoring of model pairs on the same
# tokens (per-token KL both ways), and statistics over prompts per group.


rule finetune:
    """Short supervised finetune of a model on a generated reasoning data set: K checkpoints."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        directory("results/finetune/{model}"),
    log:
        "logs/finetune/{model}.log",
    benchmark:
        "results/benchmarks/finetune/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: RUNTIME["threads"]
    resources:
        cpus_per_task=RUNTIME["threads"],
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
        gpu=GPU,
    params:
        finetune={
            key: value for key, value in (FINETUNE or {}).items() if key != "base"
        },
    script:
        "../scripts/finetune.py"


rule cross_score:
    """Models a and b on the same tokens: logprobs, entropies, KL(a||b) and KL(b||a)."""
    input:
        manifest_a="results/models/{model_a}/manifest.json",
        manifest_b="results/models/{model_b}/manifest.json",
        tokens=pair_tokens,
    output:
        "results/pairs/{prompt_set}/{model_a}/{model_b}/{source}.parquet",
    log:
        "logs/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.log",
    benchmark:
        "results/benchmarks/cross_score/{prompt_set}/{model_a}/{model_b}/{source}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: RUNTIME["threads"]
    resources:
        cpus_per_task=RUNTIME["threads"],
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
        gpu=GPU,
    params:
        insertion=prompt_insertion,
        scoring=config["scoring"],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/cross_score.py"


rule compare_group:
    """Statistics over prompts of a group's models against its base, and the trend figure."""
    input:
        own=lambda wildcards: [
            token_file(wildcards.prompt_set, model, "generated")
            for model in GROUPS[wildcards.group]
        ],
        pairs=lambda wildcards: [
            pair_file(
                wildcards.prompt_set,
                GROUPS[wildcards.group][0],
                model,
                GROUPS[wildcards.group][0],
            )
            for model in GROUPS[wildcards.group][1:]
        ],
        tokenizers="results/comparisons/{group}/tokenizers.json",
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
        + ANALYSIS["vector_format"],
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
        models=lambda wildcards: GROUPS[wildcards.group],
        comparison=COMPARISON,
        analysis=ANALYSIS,
    script:
        "../scripts/compare_group.py"
