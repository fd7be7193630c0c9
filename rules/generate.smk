rule generate:
    """Sample from a model and score every generated token from the same logits."""
    input:
        manifest=get_manifest,
        prompts=get_prompt_file,
    output:
        generations="results/generations/{prompt_set}/{model}.parquet",
        tokens="results/tokens/{prompt_set}/{model}/{model}.parquet",
    log:
        "logs/generate/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/generate/{prompt_set}/{model}.tsv"
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
        generation=plan.generation_options,
        scoring=config["scoring"],
        runtime=plan.load_options,
    script:
        "../scripts/generate.py"


rule teacher_force:
    """Score the prompt set's reference answers (teacher forcing)."""
    input:
        manifest=get_manifest,
        prompts=get_prompt_file,
    output:
        tokens="results/tokens/{prompt_set}/{model}/reference.parquet",
    log:
        "logs/teacher_force/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/teacher_force/{prompt_set}/{model}.tsv"
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
        "../scripts/teacher_force.py"
