rule plot_prompt_figures:
    """Per prompt: entropy per generation step (a panel per model) and entropy histograms."""
    input:
        tokens=get_group_token_files,
        tokenizers="results/comparison/{group}/tokenizers.json",
    output:
        report(
            directory("results/figures/{prompt_set}/{group}/{view}/per_prompt"),
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
        mem_mb=2000,
        runtime=20,
    params:
        vector_format=config["analysis"]["vector_format"],
    script:
        "../scripts/plot_prompt_figures.py"


rule plot_entropy_hist:
    """Entropy distribution over all prompts, the group's models overlaid."""
    input:
        tokens=get_group_token_files,
        tokenizers="results/comparison/{group}/tokenizers.json",
    output:
        png=report(
            "results/figures/{prompt_set}/{group}/{view}/entropy_hist_all.png",
            caption="../report/entropy_hist_all.rst",
            category="Entropy distribution",
            labels={
                "prompt set": "{prompt_set}",
                "group": "{group}",
                "tokens": "{view}",
            },
        ),
        vector="results/figures/{prompt_set}/{group}/{view}/entropy_hist_all."
        + config["analysis"]["vector_format"],
    log:
        "logs/plot_entropy_hist/{prompt_set}/{group}/{view}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_entropy_hist.py"
