# What `snakemake --report` shows beyond the figures: a page per scored sequence (the token view)
# and the run record its front page (report/workflow.rst) names.
import json
from pathlib import Path

# The report's front page (report/workflow.rst) is rendered with only `snakemake.config` in
# scope; the record of the run (rule run_record) reaches it there, under a key the schema does
# not allow in a config file.
if Path(RUN_RECORD).exists():
    config["_run_record"] = json.loads(Path(RUN_RECORD).read_text())


rule token_view:
    """One HTML page per scored sequence, tokens coloured by entropy, surprisal or KL."""
    input:
        tokens="results/tokens/{prompt_set}/{model}/{source}.parquet",
        manifest=get_manifest,
        prompts=get_prompt_file,
        pairs=get_scoring_pairs,
        generations=get_token_view_generations,
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
        insertion=get_prompt_insertion,
        metric=config["token_view"]["metric"],
    script:
        "../scripts/token_view.py"


rule run_record:
    """The config files, the models with their manifest hashes and the package versions of the jobs."""
    input:
        expand("results/models/{model}/manifest.json", model=plan.models),
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
        runtime=plan.load_options,
    script:
        "../scripts/run_record.py"
