# The token analyses read their tables through DuckDB (tokenscope.analysis.tokens), which gets 60%
# of mem_mb: sorts spill beyond it; the exact quartiles hold 8 bytes per token row in memory.
# Measured on 10^7 token rows per model (721 MB of parquet): analyze_tokens peak RSS 0.8 GB,
# summarize_group of 4 such models 0.8-1.1 GB (torch imported by the job helpers: 0.3 GB of it).
from tokenscope.workflow.resources import scaled_mem_mb, scaled_runtime


rule analyze_tokens:
    """Entropy statistics, quantile bins and token groups of one model on one token source."""
    input:
        tokens=paths.TOKENS,
    output:
        describe=analysis_table("describe", "entropy statistics"),
        describe_per_prompt=analysis_table("describe_per_prompt", "entropy per prompt"),
        qcut_bins=analysis_table("qcut_bins", "quantile bins"),
        qcut_bins_md=fill(paths.ANALYSIS, file="qcut_bins.md"),
        qcut_samples=analysis_table("qcut_samples", "bin samples"),
        qcut_samples_md=fill(paths.ANALYSIS, file="qcut_samples.md"),
        by_context_token=analysis_table("by_context_token", "by context token"),
        by_context_token_md=fill(paths.ANALYSIS, file="by_context_token.md"),
        by_token=analysis_table("by_token", "by token"),
        by_token_md=fill(paths.ANALYSIS, file="by_token.md"),
    log:
        "logs/analyze_tokens/{prompt_set}/{model}/{source}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=scaled_mem_mb(1000, 1.0, max_mb=16000),
        runtime=scaled_runtime(10, 10),
    params:
        qcut_metric=config["analysis"]["qcut_metric"],
        n_bins=config["analysis"]["n_bins"],
        samples_per_bin=config["analysis"]["samples_per_bin"],
        min_count=config["analysis"]["min_count"],
        top_n=config["analysis"]["top_n"],
    script:
        "../scripts/analyze_tokens.py"


rule summarize_group:
    """Entropy statistics of the models of a group, side by side, overall and per prompt."""
    input:
        tokens=get_group_token_files,
        tokenizers=paths.TOKENIZERS,
    output:
        describe=report(
            fill(paths.SUMMARY, file="describe.csv"),
            caption="../report/describe.rst",
            category="Entropy statistics",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
                "table": "all prompts",
            },
        ),
        describe_md=fill(paths.SUMMARY, file="describe.md"),
        describe_per_prompt=report(
            fill(paths.SUMMARY, file="describe_per_prompt.csv"),
            caption="../report/describe.rst",
            category="Entropy statistics",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
                "table": "per prompt",
            },
        ),
    log:
        "logs/summarize_group/{prompt_set}/{group}/{view}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=scaled_mem_mb(1000, 0.3, max_mb=16000),
        runtime=scaled_runtime(10, 5),
    script:
        "../scripts/summarize_group.py"
