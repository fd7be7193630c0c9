# Model internals (issue figures 000, 001, 002, 004): hooks on the chosen layers, eager
# attention only in the passes that read attention weights.


rule marker_attention:
    """Share of attention each generated token gives to marker tokens (e.g. <think>)."""
    input:
        manifest=manifest,
        generations="results/generations/{prompt_set}/{model}.parquet",
        tokens="results/tokens/{prompt_set}/{model}/{model}.parquet",
    output:
        "results/internals/{prompt_set}/{model}/marker_attention.parquet",
    log:
        "logs/marker_attention/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/marker_attention/{prompt_set}/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: RUNTIME["threads"]
    resources:
        cpus_per_task=RUNTIME["threads"],
        mem_mb=RUNTIME["mem_mb"],
        runtime=RUNTIME["runtime_min"],
        gpu=GPU,
    params:
        marker_attention=INTERNALS["marker_attention"],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/marker_attention.py"


rule attention_positions:
    """Mean attention each prompt position receives, for the configured (layer, head) pairs."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        "results/internals/{prompt_set}/{model}/attention_positions.parquet",
    log:
        "logs/attention_positions/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/attention_positions/{prompt_set}/{model}.tsv"
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
        attention_positions=INTERNALS["attention_positions"],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/attention_positions.py"


rule depth:
    """Hidden-state convergence across depth and the logit lens of each prompt's tokens."""
    input:
        manifest=manifest,
        prompts=prompt_file,
    output:
        convergence="results/internals/{prompt_set}/{model}/convergence.parquet",
        logit_lens="results/internals/{prompt_set}/{model}/logit_lens.parquet",
    log:
        "logs/depth/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/depth/{prompt_set}/{model}.tsv"
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
        depth=INTERNALS["depth"],
        chunk_rows=config["scoring"]["chunk_rows"],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/depth.py"


rule plot_marker_attention:
    """Seed 000: entropy and attention to marker tokens per generation step, a line per model."""
    input:
        lambda wildcards: [
            f"results/internals/{wildcards.prompt_set}/{model}/marker_attention.parquet"
            for model in GROUPS[wildcards.group]
            if model in INTERNALS_MODELS
        ],
    output:
        png=report(
            "results/figures/internals/{prompt_set}/{group}/marker_attention.png",
            caption="../report/marker_attention.rst",
            category="Internals",
            subcategory="Attention to marker tokens",
            labels={"prompt set": "{prompt_set}", "group": "{group}"},
        ),
        vector="results/figures/internals/{prompt_set}/{group}/marker_attention."
        + ANALYSIS["vector_format"],
    log:
        "logs/plot_marker_attention/{prompt_set}/{group}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    params:
        markers=INTERNALS["marker_attention"]["markers"],
    script:
        "../scripts/plot_marker_attention.py"


rule plot_attention_positions:
    """Seed 001: attention received per position with vs without the inserted tokens."""
    input:
        with_filler="results/internals/{prompt_set}/{model}/attention_positions.parquet",
        without=lambda wildcards: f"results/internals/{source_prompt_set(wildcards.prompt_set)}/{wildcards.model}/attention_positions.parquet",
    output:
        report(
            directory(
                "results/figures/internals/{prompt_set}/{model}/attention_positions"
            ),
            patterns=["attention_positions-{prompt_id}.png"],
            caption="../report/attention_positions.rst",
            category="Internals",
            subcategory="Attention with and without filler tokens",
            labels={
                "prompt set": "{prompt_set}",
                "model": "{model}",
                "prompt": "{prompt_id}",
            },
        ),
    log:
        "logs/plot_attention_positions/{prompt_set}/{model}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    params:
        vector_format=ANALYSIS["vector_format"],
    script:
        "../scripts/plot_attention_positions.py"


rule plot_depth:
    """Seeds 002 and 004: convergence heatmap and logit-lens heatmap per prompt."""
    input:
        convergence="results/internals/{prompt_set}/{model}/convergence.parquet",
        logit_lens="results/internals/{prompt_set}/{model}/logit_lens.parquet",
    output:
        report(
            directory("results/figures/internals/{prompt_set}/{model}/depth"),
            patterns=["{figure}-{prompt_id}.png"],
            caption="../report/depth.rst",
            category="Internals",
            subcategory="Depth: convergence and logit lens",
            labels={
                "prompt set": "{prompt_set}",
                "model": "{model}",
                "figure": "{figure}",
                "prompt": "{prompt_id}",
            },
        ),
    log:
        "logs/plot_depth/{prompt_set}/{model}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    params:
        depth=INTERNALS["depth"],
        vector_format=ANALYSIS["vector_format"],
    script:
        "../scripts/plot_depth.py"
