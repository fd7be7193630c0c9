# An optional short finetune of a model (config `finetune`): its checkpoints checkpoint-k-of-K
# become models of the run, after the configured ones (tokenscope.workflow.planning).


rule finetune:
    """Short supervised finetune of a model on a generated reasoning data set: K checkpoints."""
    input:
        manifest=paths.MANIFEST,
    output:
        directory(paths.FINETUNE),
    log:
        "logs/finetune/{model}.log",
    benchmark:
        "results/benchmarks/finetune/{model}.tsv"
    conda:
        "../envs/tokenscope.yaml"
    threads: config["runtime"]["threads"]
    resources:
        cpus_per_task=config["runtime"]["threads"],
        # weights, gradients and AdamW's two moments of the trained layers, in fp32
        mem_mb=model_mem_mb(config["runtime"]["mem_mb"], per_model_mb=5.0),
        runtime=config["runtime"]["runtime_min"],
        gpu=plan.gpu,
    params:
        finetune=plan.finetune_options,
    script:
        "../scripts/finetune.py"
