# Model internals (marker attention, filler attention, depth convergence, logit lens): hooks on
# the chosen layers, eager attention only in the passes that read attention weights. Each rule's
# params are the settings that change its outputs, never a whole section: the section's
# prompt_sets (which sets run) and the plot settings do not rerun the forward passes. The params
# are an options object's (tokenscope.internals.options), one param per setting, so that each
# param's value stays the config's.
from tokenscope.internals.options import (
    AttentionPositionsOptions,
    DepthFigureOptions,
    DepthOptions,
    MarkerAttentionOptions,
)


rule marker_attention:
    """Share of attention each generated token gives to marker tokens (e.g. <think>)."""
    input:
        manifest=get_manifest,
        generations=paths.GENERATIONS,
        tokens=paths.OWN_TOKENS,
    output:
        fill(paths.INTERNALS, table="marker_attention"),
    log:
        "logs/marker_attention/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/marker_attention/{prompt_set}/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        # generations read whole, six columns of the per-token table: about twice their parquet size
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"], per_input_mb=2.0),
        runtime=model_runtime(
            config["runtime"]["runtime_min"], min_per_model_gb_input_mb=0.005
        ),
        gpu=plan.gpu,
    # What changes the table; its batch_size (a speed knob) the script reads from the config.
    params:
        **MarkerAttentionOptions.from_config(config).params(),
        runtime=plan.load_options,
    script:
        "../scripts/marker_attention.py"


rule attention_positions:
    """Mean attention each prompt position receives, for the configured (layer, head) pairs."""
    input:
        manifest=get_manifest,
        prompts=get_prompt_file,
    output:
        fill(paths.INTERNALS, table="attention_positions"),
    log:
        "logs/attention_positions/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/attention_positions/{prompt_set}/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"]),
        runtime=model_runtime(config["runtime"]["runtime_min"]),
        gpu=plan.gpu,
    params:
        **AttentionPositionsOptions.from_config(config).params(),
        insertion=get_prompt_insertion,
        runtime=plan.load_options,
    script:
        "../scripts/attention_positions.py"


rule depth:
    """Hidden-state convergence across depth and the logit lens of each prompt's tokens."""
    input:
        manifest=get_manifest,
        prompts=get_prompt_file,
    output:
        convergence=fill(paths.INTERNALS, table="convergence"),
        logit_lens=fill(paths.INTERNALS, table="logit_lens"),
    log:
        "logs/depth/{prompt_set}/{model}.log",
    benchmark:
        "results/benchmarks/depth/{prompt_set}/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"]),
        runtime=model_runtime(config["runtime"]["runtime_min"]),
        gpu=plan.gpu,
    # What changes the tables: not the plot settings (chunk_tokens, max_positions: rule plot_depth)
    # nor scoring.chunk_rows (memory), which the script reads from the config.
    params:
        **DepthOptions.from_config(config).params(),
        insertion=get_prompt_insertion,
        runtime=plan.load_options,
    script:
        "../scripts/depth.py"


rule plot_marker_attention:
    """Marker attention: entropy and attention to marker tokens per generation step, a line per model."""
    input:
        get_marker_attention_tables,
    output:
        png=report(
            fill(paths.MARKER_ATTENTION_FIGURE, suffix="png"),
            caption="../report/marker_attention.rst",
            category="Internals",
            subcategory="Attention to marker tokens",
            labels={"prompt set": "{prompt_set}", "group": "{group}"},
        ),
        vector=fill(
            paths.MARKER_ATTENTION_FIGURE, suffix=config["analysis"]["vector_format"]
        ),
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
        markers=config["internals"]["marker_attention"]["markers"],
    script:
        "../scripts/plot_marker_attention.py"


rule plot_attention_positions:
    """Filler attention: attention received per position with vs without the inserted tokens."""
    input:
        with_filler=fill(paths.INTERNALS, table="attention_positions"),
        without=get_attention_positions_without,
    output:
        report(
            directory(fill(paths.INTERNALS_FIGURES, analysis="attention_positions")),
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
        vector_format=config["analysis"]["vector_format"],
    script:
        "../scripts/plot_attention_positions.py"


rule plot_depth:
    """Depth convergence and logit lens: a heatmap of each per prompt."""
    input:
        convergence=fill(paths.INTERNALS, table="convergence"),
        logit_lens=fill(paths.INTERNALS, table="logit_lens"),
    output:
        report(
            directory(fill(paths.INTERNALS_FIGURES, analysis="depth")),
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
        **DepthFigureOptions.from_config(config).params(),
        vector_format=config["analysis"]["vector_format"],
    script:
        "../scripts/plot_depth.py"
