# tokenscope: per-token measurements of LLM checkpoints. See README.md.
from snakemake.utils import min_version

min_version("9.0")


# The default config, unless --configfile (or a profile's configfile) names the user's own: a user's
# file replaces this one rather than being merged into it (docs/config.md). --config KEY=VALUE
# alone still edits the default config.
if not workflow.overwrite_configfiles:

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
include: "rules/outcomes.smk"
include: "rules/report.smk"
include: "rules/gallery.smk"


rule all:
    default_target: True
    input:
        plan.final_targets(),
