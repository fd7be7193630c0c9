rule generate:
    """Sample from a model and score every generated token from the same logits."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        generations="results/generations/{prompt_set}/{model}.parquet",
        tokens="results/tokens/{prompt_set}/{model}/{model}.parquet",
    params:
        generation=config["generation"],
        scoring=config["scoring"],
        runtime=RUNTIME,
    log:
        "logs/generate/{prompt_set}/{model}.log",
    benchmark:
        "benchmarks/generate/{prompt_set}/{model}.tsv"
    threads: RUNTIME["threads"]
    resources:
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
        gpu=GPU,
    conda:
        "../envs/tokenscope.yaml"
    script:
        "../scripts/generate.py"


rule teacher_force:
    """Score the prompt set's reference answers (teacher forcing)."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        tokens="results/tokens/{prompt_set}/{model}/reference.parquet",
    params:
        scoring=config["scoring"],
        runtime=RUNTIME,
    log:
        "logs/teacher_force/{prompt_set}/{model}.log",
    benchmark:
        "benchmarks/teacher_force/{prompt_set}/{model}.tsv"
    threads: RUNTIME["threads"]
    resources:
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
        gpu=GPU,
    conda:
        "../envs/tokenscope.yaml"
    script:
        "../scripts/teacher_force.py"

