rule generate:
    """Sample from a model and score every generated token from the same logits."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        generations="results/generations/{prompt_set}/{model}.parquet",
        tokens="results/tokens/{prompt_set}/{model}/{model}.parquet",
    log:
        "logs/generate/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/generate/{prompt_set}/{model}.tsv"
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
        generation=GENERATION,
        scoring=config["scoring"],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/generate.py"


rule teacher_force:
    """Score the prompt set's reference answers (teacher forcing)."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        tokens="results/tokens/{prompt_set}/{model}/reference.parquet",
    log:
        "logs/teacher_force/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/teacher_force/{prompt_set}/{model}.tsv"
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
        "../scripts/teacher_force.py"
