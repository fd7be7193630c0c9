# Resources of the model jobs (here and in generate.smk, internals.smk, finetune.smk, compare.smk,
# which are included after this file): the models' size and the data they read, never less than
# the config's runtime.mem_mb and runtime.runtime_min (docs/cluster.md).
from tokenscope.workflow.resources import model_mem_mb, model_runtime


rule prepare_model:
    """Resolve a model source once into safetensors, tokenizer and a manifest."""
    input:
        get_model_files,
    output:
        paths.MANIFEST,
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    wildcard_constraints:
        model=CONFIGURED_MODELS,
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=config["runtime"]["mem_mb"],
        runtime=config["runtime"]["runtime_min"],
    params:
        source=get_model_source,
    script:
        "../scripts/prepare_model.py"


rule check_tokenizers:
    """Models compared token by token must share one tokenizer."""
    input:
        get_group_manifests,
    output:
        paths.TOKENIZERS,
    log:
        "logs/check_tokenizers/{group}.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/check_tokenizers.py"
