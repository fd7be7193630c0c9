rule generate_shard:
    """Sample from a model on one shard of a prompt set (generation.shard_size prompts, every
    sample of each) and score every generated token from the same logits."""
    input:
        manifest=get_manifest,
        # ancient: prompts appended to the file rerun no earlier shard; params.shard holds the
        # shard's own prompts' sha256, so a shard reruns exactly when they change.
        prompts=ancient(get_prompt_file),
    output:
        generations=fill(paths.SHARD_TABLE, table="generations"),
        tokens=fill(paths.SHARD_TABLE, table="tokens"),
    log:
        "logs/generate_shard/{prompt_set}/{model}/{shard}.log",
    benchmark:
        "results/benchmarks/generate_shard/{prompt_set}/{model}/{shard}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=config["runtime"]["mem_mb"],
        runtime=config["runtime"]["runtime_min"],
        gpu=plan.gpu,
    params:
        shard=get_shard,
        insertion=get_prompt_insertion,
        # GenerationOptions' settings that change results, in the config's key order (unchanged
        # param text: no shard reruns); of the scoring settings only n_alternatives does.
        generation=GenerationOptions.job_params(config),
        n_alternatives=ScoringOptions.from_config(config).n_alternatives,
        schema=SCHEMA_VERSION,  # a new table schema reruns existing results
        runtime=plan.load_options,
    script:
        "../scripts/generate.py"


rule gather_generation:
    """A model's generations table of a prompt set: its shards' rows, streamed in shard order into
    one file (one record batch in memory at a time), each generation graded on the way
    (tokenscope.outcomes.answers: extracted answer, correct, format facts). A changed answer,
    extraction pattern or tolerance reruns this job and the readers of the table, never the
    generation or the per-token table's jobs."""
    input:
        generations=get_generation_shards,
        # ancient: params.answers holds the digest of the set's answers, so a touched or appended
        # file does not regrade (appended prompts come with a new shard anyway).
        prompts=ancient(get_prompt_file),
    output:
        generations=paths.GENERATIONS,
    log:
        "logs/gather_generation/{prompt_set}/{model}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=1000,
        runtime=scaled_runtime(5, 2),
    params:
        answers=get_answer_params,
    script:
        "../scripts/gather_shards.py"


rule gather_tokens:
    """A model's per-token table of a prompt set: its shards' rows, streamed in shard order into
    one file (one record batch in memory at a time)."""
    input:
        tokens=get_token_shards,
    output:
        tokens=paths.OWN_TOKENS,
    log:
        "logs/gather_tokens/{prompt_set}/{model}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=1000,
        runtime=scaled_runtime(5, 2),
    script:
        "../scripts/gather_shards.py"


rule teacher_force:
    """Score the reference answers of one shard of a prompt set (teacher forcing; the generation
    shards' prompts), a chunk of answers at a time."""
    input:
        manifest=get_manifest,
        # ancient: as for generate_shard, params.shard holds the shard's own prompts' sha256.
        prompts=ancient(get_prompt_file),
    output:
        tokens=fill(paths.SHARD_TABLE, table="reference"),
    log:
        "logs/teacher_force/{prompt_set}/{model}/{shard}.log",
    benchmark:
        "results/benchmarks/teacher_force/{prompt_set}/{model}/{shard}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"]),
        # a shard's work is bounded by generation.shard_size, as generate_shard's: not scaled by the
        # whole prompt file's size (model_runtime)
        runtime=config["runtime"]["runtime_min"],
        gpu=plan.gpu,
    # What changes the table: ScoringOptions' score_span and n_alternatives; its batch_size and
    # chunk_rows (speed, memory) the script reads from the config.
    params:
        **ScoringOptions.from_config(config).params(),
        shard=get_shard,
        insertion=get_prompt_insertion,
        schema=SCHEMA_VERSION,  # a new table schema reruns existing results
        runtime=plan.load_options,
    script:
        "../scripts/teacher_force.py"


rule gather_reference:
    """A model's teacher-forced table of a prompt set's reference answers: its shards' rows,
    streamed in shard order into one file (one record batch in memory at a time)."""
    input:
        tokens=get_reference_shards,
    output:
        tokens=paths.REFERENCE_TOKENS,
    log:
        "logs/gather_reference/{prompt_set}/{model}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=1000,
        runtime=scaled_runtime(5, 2),
    script:
        "../scripts/gather_shards.py"
