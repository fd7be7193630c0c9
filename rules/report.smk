# What `snakemake --report` shows beyond the figures: a page per scored sequence (the token view)
# and the run record its front page (report/workflow.rst) names.


rule token_view:
    """One HTML page per scored sequence, tokens coloured by entropy, surprisal or KL."""
    input:
        tokens="results/tokens/{prompt_set}/{model}/{source}.parquet",
        manifest=manifest,
        prompts=prompt_file,
        pairs=lambda wildcards: scoring_pairs(
            wildcards.prompt_set, wildcards.model, wildcards.source
        ),
        generations=lambda wildcards: (
            []
            if wildcards.source == "reference"
            else f"results/generations/{wildcards.prompt_set}/{wildcards.source}.parquet"
        ),
    output:
        report(
            directory("results/token_view/{prompt_set}/{model}/{source}"),
            patterns=["{prompt_id}-{sample}.html"],
            caption="../report/token_view.rst",
            category="Token view",
            subcategory="{prompt_set}",
            labels={
                "model": "{model}",
                "tokens": "{source}",
                "prompt": "{prompt_id}",
                "sample": "{sample}",
            },
        ),
    log:
        "logs/token_view/{prompt_set}/{model}/{source}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=2000,
        runtime=10,
    params:
        insertion=prompt_insertion,
        metric=TOKEN_VIEW["metric"],
    script:
        "../scripts/token_view.py"


rule run_record:
    """The config files, the models with their manifest hashes and the package versions of the jobs."""
    input:
        expand("results/models/{model}/manifest.json", model=MODELS),
    output:
        RUN_RECORD,
    log:
        "logs/run_record.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=500,
        runtime=5,
    params:
        config_files=[str(path) for path in workflow.configfiles],
        runtime=LOAD_OPTIONS,
    script:
        "../scripts/run_record.py"
