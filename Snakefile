# tokenscope: per-token measurements of LLM checkpoints. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/inputs.smk"
include: "rules/models.smk"
include: "rules/generate.smk"
include: "rules/analysis.smk"
include: "rules/figures.smk"
include: "rules/internals.smk"
include: "rules/finetune.smk"
include: "rules/compare.smk"
include: "rules/report.smk"
include: "rules/gallery.smk"


rule all:
    default_target: True
    input:
        plan.final_targets(),
