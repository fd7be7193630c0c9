# Config validation, wildcard constraints and the plan: the models, prompt sets, groups, pair
# tables and targets of this config (tokenscope.workflow.planning, torch-free), read by `rule all`
# and by the input functions of rules/inputs.smk.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library lives in src/; importing it from there keeps --use-conda runs working without
# installing the package into the environment that runs Snakemake.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from tokenscope.errors import ConfigError, ModelError, PromptSetError
from tokenscope.generation.options import GenerationOptions
from tokenscope.schema_version import SCHEMA_VERSION
from tokenscope.scoring.options import ScoringOptions
from tokenscope.workflow.config import config_error_message
from tokenscope.workflow import paths
from tokenscope.workflow.paths import fill
from tokenscope.workflow.planning import NAME_PATTERN, plan_workflow
from tokenscope.workflow.resources import scaled_runtime
from tokenscope.workflow.shards import SHARD_PATTERN, plan_shards

try:
    validate(config, schema="../schemas/config.schema.yaml", set_default=True)
except WorkflowError as error:
    raise WorkflowError(config_error_message(error)) from None


# One path segment each, so that e.g. paths.TOKENIZERS (results/comparison/{group}/tokenizers.json)
# and paths.COMPARISON_TABLES (results/comparison/{prompt_set}/{group}/tables) cannot match each
# other's files.
wildcard_constraints:
    model=NAME_PATTERN,
    model_a=NAME_PATTERN,
    model_b=NAME_PATTERN,
    source=NAME_PATTERN,
    prompt_set=NAME_PATTERN,
    group=NAME_PATTERN,
    view="generated|reference",
    shard=SHARD_PATTERN,


try:
    plan = plan_workflow(config)
    # Each prompt set's generation shards (tokenscope.workflow.shards): its file read once more, no JSON parsed.
    shards = plan_shards(plan.prompt_sets, config["generation"])
except (ConfigError, ModelError, PromptSetError) as error:
    raise WorkflowError(str(error)) from None

# The model wildcard of prepare_model: this config's models only, so that a path model reading
# another run's prepared folder (results/models/<name>/, manifest.json included) is read as a
# checkpoint folder, not taken for a model <name> to prepare.
CONFIGURED_MODELS = "|".join(re.escape(name) for name in plan.models)

# How many pair tables the comparison plans (K(K-1)/2 model pairs per group with pairs: all).
if plan.pair_summary():
    from snakemake.logging import logger

    logger.info(plan.pair_summary())
