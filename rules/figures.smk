# Figures of all tokens or of chosen prompts, read through DuckDB (tokenscope.duckdb_tables).
from tokenscope.workflow.resources import scaled_mem_mb, scaled_runtime


rule plot_prompt_figures:
    """Per chosen prompt: entropy per generation step (a panel per model) and entropy histograms."""
    input:
        tokens=get_group_token_files,
        tokenizers=paths.TOKENIZERS,
    output:
        report(
            directory(paths.PROMPT_FIGURES),
            patterns=["{figure}-{prompt_id}.png"],
            caption="../report/per_prompt.rst",
            category="Per-prompt entropy",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
                "figure": "{figure}",
                "prompt": "{prompt_id}",
            },
        ),
    log:
        "logs/plot_prompt_figures/{prompt_set}/{group}/{view}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        # DuckDB gets a share of mem_mb (analysis.tokens.duckdb_memory_mb)
        mem_mb=scaled_mem_mb(1200, 0.05, max_mb=4000),
        runtime=scaled_runtime(20, 5),
    params:
        vector_format=config["analysis"]["vector_format"],
        max_prompts=config["analysis"]["max_prompt_figures"],
        prompt_ids=config["token_view"]["prompt_ids"],
    script:
        "../scripts/plot_prompt_figures.py"


rule plot_entropy_hist:
    """Entropy distribution over all prompts, the group's models overlaid."""
    input:
        tokens=get_group_token_files,
        tokenizers=paths.TOKENIZERS,
    output:
        png=report(
            fill(paths.ENTROPY_HIST, suffix="png"),
            caption="../report/entropy_hist_all.rst",
            category="Entropy distribution",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
            },
        ),
        vector=fill(paths.ENTROPY_HIST, suffix=config["analysis"]["vector_format"]),
    log:
        "logs/plot_entropy_hist/{prompt_set}/{group}/{view}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=scaled_mem_mb(1200, 0.05, max_mb=4000),
        runtime=scaled_runtime(10, 5),
    script:
        "../scripts/plot_entropy_hist.py"
