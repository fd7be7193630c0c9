# Config validation, wildcard constraints and the plan: the models, prompt sets, groups, pair
# tables and targets of this config (tokenscope.workflow.planning, torch-free), read by `rule all`
# and by the input functions of rules/inputs.smk.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library lives in src/; importing it from there keeps --use-conda runs working without
# installing the package into the environment that runs Snakemake.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from tokenscope.errors import ConfigError, ModelError, PromptSetError
from tokenscope.workflow.config import config_error_message
from tokenscope.workflow.planning import NAME_PATTERN, RUN_RECORD, plan_workflow

try:
    validate(config, schema="../schemas/config.schema.yaml", set_default=True)
except WorkflowError as error:
    raise WorkflowError(config_error_message(error)) from None


# One path segment each, so that e.g. results/comparison/{group}/tokenizers.json and
# results/comparison/{prompt_set}/{group}/... cannot match each other's files.
wildcard_constraints:
    model=NAME_PATTERN,
    model_a=NAME_PATTERN,
    model_b=NAME_PATTERN,
    source=NAME_PATTERN,
    prompt_set=NAME_PATTERN,
    group=NAME_PATTERN,
    view="generated|reference",


try:
    plan = plan_workflow(config)
except (ConfigError, ModelError, PromptSetError) as error:
    raise WorkflowError(str(error)) from None
