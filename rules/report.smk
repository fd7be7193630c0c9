# What `snakemake --report` shows beyond the figures: the token view (pages of chosen sequences
# and an index of every sequence per model and token source) and the run record its front page
# (report/workflow.rst) names.
import json
from pathlib import Path

from tokenscope.report.options import SideBySideOptions, TokenViewOptions
from tokenscope.report.selection import check_listed_prompts
from tokenscope.workflow.resources import scaled_mem_mb, scaled_runtime

# The report's front page (report/workflow.rst) is rendered with only `snakemake.config` in
# scope; the record of the run (rule run_record) reaches it there, under a key the schema does
# not allow in a config file.
if Path(paths.RUN_RECORD).exists():
    config["_run_record"] = json.loads(Path(paths.RUN_RECORD).read_text())

# Prompts listed for pages and per-prompt figures must exist in some prompt set.
try:
    check_listed_prompts(
        config["token_view"]["prompt_ids"],
        [plan.prompt_file(name) for name in plan.prompt_sets],
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None


rule token_view:
    """Pages of chosen sequences, tokens coloured by a per-token metric or KL; an index of every sequence."""
    input:
        tokens=paths.TOKENS,
        manifest=get_manifest,
        prompts=get_prompt_file,
        pairs=get_scoring_pairs,
        generations=get_token_view_generations,
    output:
        pages=report(
            directory(paths.TOKEN_VIEW),
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
        index=report(
            paths.TOKEN_VIEW_INDEX,
            caption="../report/token_view_index.rst",
            category="Token view",
            subcategory="{prompt_set}",
            labels={
                "model": "{model}",
                "tokens": "{source}",
                "prompt": "(index of every sequence)",
                "sample": "all",
            },
        ),
    log:
        "logs/token_view/{prompt_set}/{model}/{source}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        # DuckDB gets a share of mem_mb (analysis.tokens.duckdb_memory_mb)
        mem_mb=scaled_mem_mb(1200, 0.25, max_mb=4000),
        runtime=scaled_runtime(10, 10),
    params:
        **TokenViewOptions.from_config(config).params(),
        insertion=get_prompt_insertion,
    script:
        "../scripts/token_view.py"


rule run_record:
    """The config files, the models with their manifest hashes and the package versions of the jobs."""
    input:
        expand(paths.MANIFEST, model=plan.models),
    output:
        paths.RUN_RECORD,
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


# The side-by-side view: two checkpoints on one prompt (their generations, and a shared text of a
# pair table coloured by logprob B - A or KL, both models' top-k on hover); an index per pair table.
rule side_by_side:
    """Pages of two checkpoints on one prompt: both generations, a shared text coloured by logprob B - A or KL."""
    input:
        pairs=paths.PAIR,
        manifest=fill(paths.MANIFEST, model="{model_a}"),
        prompts=get_prompt_file,
        generations=get_side_by_side_generations,
    output:
        pages=report(
            directory(paths.SIDE_BY_SIDE),
            patterns=["{prompt_id}-{sample}.html"],
            caption="../report/side_by_side.rst",
            category="Side by side",
            subcategory="{prompt_set}",
            labels={
                "pair": "{model_a} vs {model_b}",
                "tokens": "{source}",
                "prompt": "{prompt_id}",
                "sample": "{sample}",
            },
        ),
        index=report(
            paths.SIDE_BY_SIDE_INDEX,
            caption="../report/side_by_side_index.rst",
            category="Side by side",
            subcategory="{prompt_set}",
            labels={
                "pair": "{model_a} vs {model_b}",
                "tokens": "{source}",
                "prompt": "(index of every sequence)",
                "sample": "all",
            },
        ),
    log:
        "logs/side_by_side/{prompt_set}/{model_a}/{model_b}/{source}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        # DuckDB gets a share of mem_mb (summaries and scales are aggregates of the pair table)
        mem_mb=scaled_mem_mb(1200, 0.25, max_mb=4000),
        runtime=scaled_runtime(10, 10),
    params:
        **SideBySideOptions.from_config(config).params(),
        insertion=get_prompt_insertion,
    script:
        "../scripts/side_by_side.py"
