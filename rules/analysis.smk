rule analyze_tokens:
    """Entropy statistics, quantile bins and token groups of one model on one token source."""
    input:
        "results/tokens/{prompt_set}/{model}/{source}.parquet",
    output:
        describe=analysis_table("describe", "entropy statistics"),
        describe_per_prompt=analysis_table("describe_per_prompt", "entropy per prompt"),
        qcut_bins=analysis_table("qcut_bins", "quantile bins"),
        qcut_bins_md="results/analysis/{prompt_set}/{model}/{source}/qcut_bins.md",
        qcut_samples=analysis_table("qcut_samples", "bin samples"),
        qcut_samples_md="results/analysis/{prompt_set}/{model}/{source}/qcut_samples.md",
        by_context_token=analysis_table("by_context_token", "by context token"),
        by_context_token_md="results/analysis/{prompt_set}/{model}/{source}/by_context_token.md",
        by_token=analysis_table("by_token", "by token"),
        by_token_md="results/analysis/{prompt_set}/{model}/{source}/by_token.md",
    log:
        "logs/analyze_tokens/{prompt_set}/{model}/{source}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    params:
        analysis=config["analysis"],
    script:
        "../scripts/analyze_tokens.py"


rule summarize_group:
    """Entropy statistics of the models of a group, side by side, overall and per prompt."""
    input:
        tokens=get_group_token_files,
        tokenizers="results/comparison/{group}/tokenizers.json",
    output:
        describe=report(
            "results/summary/{prompt_set}/{group}/{view}/describe.csv",
            caption="../report/describe.rst",
            category="Entropy statistics",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
                "table": "all prompts",
            },
        ),
        describe_md="results/summary/{prompt_set}/{group}/{view}/describe.md",
        describe_per_prompt=report(
            "results/summary/{prompt_set}/{group}/{view}/describe_per_prompt.csv",
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
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/summarize_group.py"
