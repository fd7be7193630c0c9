rule prepare_model:
    """Resolve a model source once into safetensors, tokenizer and a manifest."""
    input:
        lambda wildcards: MODEL_FILES[wildcards.model],
    output:
        "results/models/{model}/manifest.json",
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
    params:
        source=lambda wildcards: config["models"][wildcards.model],
    script:
        "../scripts/prepare_model.py"


rule check_tokenizers:
    """Models compared token by token must share one tokenizer."""
    input:
        lambda wildcards: [
            f"results/models/{model}/manifest.json"
            for model in GROUPS[wildcards.group]
        ],
    output:
        "results/comparisons/{group}/tokenizers.json",
    log:
        "logs/check_tokenizers/{group}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/check_tokenizers.py"
