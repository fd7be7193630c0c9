# Config validation, names and target lists shared by all rules.
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library lives in src/; importing it from there keeps --use-conda runs working without
# installing the package into the environment that runs Snakemake.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from tokenscope.errors import PromptSetError
from tokenscope.inputs.prompts import load_prompt_set, resolve_prompt_sets
from tokenscope.model.sources import ModelSpec, model_input_files
from tokenscope.errors import ModelError
from tokenscope.workflow.config import config_error_message
from tokenscope.finetune.config import FinetuneConfig, checkpoint_name

try:
    validate(config, schema="../schemas/config.schema.yaml", set_default=True)
except WorkflowError as error:
    raise WorkflowError(config_error_message(error)) from None

NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"


wildcard_constraints:
    model=NAME_PATTERN,
    scorer=NAME_PATTERN,
    source=NAME_PATTERN,
    prompt_set=NAME_PATTERN,
    group=NAME_PATTERN,
    view="generated|reference",


FINETUNE = config.get("finetune")
FINETUNED = {}  # checkpoint model name -> the base model it was finetuned from
if FINETUNE:
    if FINETUNE["base"] not in config["models"]:
        raise WorkflowError(
            f"finetune.base: unknown model {FINETUNE['base']!r}; models: {sorted(config['models'])}"
        )
    n_checkpoints = FINETUNE.get("n_checkpoints", FinetuneConfig.n_checkpoints)
    for k in range(1, n_checkpoints + 1):
        name = checkpoint_name(k, n_checkpoints)
        if name in config["models"]:
            raise WorkflowError(
                f"models.{name}: this name is taken by the finetune's checkpoint {k}"
            )
        FINETUNED[name] = FINETUNE["base"]
        config["models"][name] = {"path": f"results/finetune/{FINETUNE['base']}/{name}"}

try:
    MODELS = {
        name: ModelSpec.from_config(name, entry)
        for name, entry in config["models"].items()
    }
    # Finetuned checkpoints do not exist when the DAG is built: they come from the finetune rule.
    MODEL_FILES = {
        name: (
            [f"results/finetune/{FINETUNED[name]}"]
            if name in FINETUNED
            else model_input_files(source)
        )
        for name, source in MODELS.items()
    }
    # name -> (JSONL file, insertion of a derived set or None)
    PROMPT_SOURCES = resolve_prompt_sets(config["prompt_sets"])
    PROMPT_SETS = {
        name: load_prompt_set(path, insertion)
        for name, (path, insertion) in PROMPT_SOURCES.items()
    }
except (ModelError, PromptSetError) as error:
    raise WorkflowError(str(error)) from None


def require_known(key, names, known, kind):
    """Stop with one line naming the config key if it lists a name that is not defined."""
    for name in names:
        if name not in known:
            raise WorkflowError(
                f"{key}: unknown {kind} {name!r}; {kind}s: {sorted(known)}"
            )


GROUPS = config.get("groups") or {"all": list(MODELS)}
for group_name, members in GROUPS.items():
    require_known(f"groups.{group_name}", members, MODELS, "model")

GENERATED_SETS = (
    list(PROMPT_SETS)
    if config["generation"]["prompt_sets"] is None
    else config["generation"]["prompt_sets"]
)
require_known("generation.prompt_sets", GENERATED_SETS, PROMPT_SETS, "prompt set")
# What a generation depends on: which prompt sets are generated for every model is not part of it.
GENERATION = {k: v for k, v in config["generation"].items() if k != "prompt_sets"}
COMPARISON = config["comparison"]
require_known(
    "comparison.prompt_sets", COMPARISON["prompt_sets"] or [], PROMPT_SETS, "prompt set"
)
COMPARED_SETS = (
    GENERATED_SETS if COMPARISON["prompt_sets"] is None else COMPARISON["prompt_sets"]
)


def group_pairs(group):
    """(a, b) model pairs cross-scored in a group: a before b in the group's order."""
    models = GROUPS[group]
    if COMPARISON["pairs"] == "base":
        return [(models[0], other) for other in models[1:]]
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]


def pair_sources(prompt_set, a, b):
    sources = []
    for source in COMPARISON["sources"]:
        if source == "reference":
            if "reference" in views(prompt_set):
                sources.append("reference")
        else:
            sources.append(a if source == "a" else b)
    return sources


def pair_file(prompt_set, a, b, source):
    return f"results/pairs/{prompt_set}/{a}/{b}/{source}.parquet"


def pair_tokens(wildcards):
    """What a pair scores: the prompt set's reference answers or a model's generations."""
    if wildcards.source == "reference":
        return prompt_file(wildcards)
    return f"results/generations/{wildcards.prompt_set}/{wildcards.source}.parquet"


def compared_groups():
    """Groups with something to compare (two models or more)."""
    return [group for group, models in GROUPS.items() if len(models) >= 2]


def pair_tables():
    """(prompt_set, a, b, source) of every pair table the comparison makes, once each."""
    tables = []
    for prompt_set in COMPARED_SETS:
        for group in compared_groups():
            for a, b in group_pairs(group):
                for source in pair_sources(prompt_set, a, b):
                    if (prompt_set, a, b, source) not in tables:
                        tables.append((prompt_set, a, b, source))
    return tables


def comparison_targets():
    return [pair_file(*table) for table in pair_tables()] + [
        f"results/comparison/{prompt_set}/{group}/trends.png"
        for prompt_set in COMPARED_SETS
        for group in compared_groups()
    ]


def scoring_pairs(prompt_set, model, source):
    """Pair tables in which `model` scored the tokens of `source` together with another model."""
    return [
        pair_file(*table)
        for table in pair_tables()
        if table[0] == prompt_set and model in table[1:3] and table[3] == source
    ]


TOKEN_VIEW = config["token_view"]
TOKEN_VIEW_SETS = (
    GENERATED_SETS if TOKEN_VIEW["prompt_sets"] is None else TOKEN_VIEW["prompt_sets"]
)
require_known(
    "token_view.prompt_sets", TOKEN_VIEW_SETS, GENERATED_SETS, "generated prompt set"
)


def token_view_targets():
    return [
        f"results/token_view/{prompt_set}/{model}/{view_source(model, view)}"
        for prompt_set in TOKEN_VIEW_SETS
        for view in views(prompt_set)
        for model in MODELS
    ]


RUN_RECORD = "results/run/record.json"
# The report's front page (report/workflow.rst) is rendered with only `snakemake.config` in
# scope; the record of the run (rule run_record) reaches it there, under a key the schema does
# not allow in a config file.
if Path(RUN_RECORD).exists():
    config["_run_record"] = json.loads(Path(RUN_RECORD).read_text())

RUNTIME = config["runtime"]
# How models are loaded: a model job's params (its threads, memory and time limits are not).
LOAD_OPTIONS = {key: RUNTIME[key] for key in ("device", "dtype", "device_map")}
ANALYSIS = config["analysis"]
INTERNALS = config["internals"]


def check_internals():
    """Names in the internals section must exist; filler figures need derived sets."""
    models = INTERNALS.get("models") or list(MODELS)
    require_known("internals.models", models, MODELS, "model")
    for analysis in ("marker_attention", "attention_positions", "depth"):
        require_known(
            f"internals.{analysis}.prompt_sets",
            INTERNALS[analysis]["prompt_sets"],
            PROMPT_SETS,
            "prompt set",
        )
    for prompt_set in INTERNALS["attention_positions"]["prompt_sets"]:
        if PROMPT_SOURCES[prompt_set][1] is None:
            raise WorkflowError(
                f"internals.attention_positions.prompt_sets: {prompt_set!r} inserts no tokens; "
                "list prompt sets defined with 'from' and 'insert'"
            )
    return models


INTERNALS_MODELS = check_internals()


def uses_gpu():
    device = RUNTIME["device"]
    if device.startswith("cuda"):
        return 1
    if device != "auto":
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.is_available())


GPU = uses_gpu()


def has_references(prompt_set):
    return any(p.reference is not None for p in PROMPT_SETS[prompt_set])


def views(prompt_set):
    """'generated': each model on its own generations; 'reference': on the reference answers."""
    scored = ["generated"]
    if config["scoring"]["teacher_forcing"] and has_references(prompt_set):
        scored.append("reference")
    return scored


def view_source(scorer, view):
    """Whose tokens a view scores: the scorer's own generations, or the reference answers."""
    return scorer if view == "generated" else "reference"


def token_file(prompt_set, scorer, view):
    return f"results/tokens/{prompt_set}/{scorer}/{view_source(scorer, view)}.parquet"


def manifest(wildcards):
    name = getattr(wildcards, "model", None) or wildcards.scorer
    return f"results/models/{name}/manifest.json"


def prompt_file(wildcards):
    return PROMPT_SOURCES[wildcards.prompt_set][0]


def prompt_insertion(wildcards):
    return PROMPT_SOURCES[wildcards.prompt_set][1]


def source_prompt_set(prompt_set):
    """The prompt set a derived set inserts tokens into."""
    return config["prompt_sets"][prompt_set]["from"]


def internals_targets():
    targets = []
    for prompt_set in INTERNALS["marker_attention"]["prompt_sets"]:
        for group in GROUPS:
            targets.append(
                f"results/figures/internals/{prompt_set}/{group}/marker_attention.png"
            )
    for prompt_set in INTERNALS["attention_positions"]["prompt_sets"]:
        for model in INTERNALS_MODELS:
            targets.append(
                f"results/figures/internals/{prompt_set}/{model}/attention_positions"
            )
    for prompt_set in INTERNALS["depth"]["prompt_sets"]:
        for model in INTERNALS_MODELS:
            targets.append(f"results/figures/internals/{prompt_set}/{model}/depth")
    return targets


def group_token_files(wildcards):
    return [
        token_file(wildcards.prompt_set, model, wildcards.view)
        for model in GROUPS[wildcards.group]
    ]


def final_targets():
    targets = []
    for prompt_set in GENERATED_SETS:
        for view in views(prompt_set):
            for model in MODELS:
                targets.append(token_file(prompt_set, model, view))
                targets.append(
                    f"results/analysis/{prompt_set}/{model}/{view_source(model, view)}/describe.csv"
                )
            for group in GROUPS:
                base = f"results/figures/{prompt_set}/{group}/{view}"
                targets += [f"{base}/entropy_hist_all.png", f"{base}/per_prompt"]
                targets.append(
                    f"results/summary/{prompt_set}/{group}/{view}/describe.csv"
                )
    return (
        targets
        + internals_targets()
        + comparison_targets()
        + token_view_targets()
        + [RUN_RECORD]
    )


def analysis_table(name, table):
    """A table of rule analyze_tokens, registered in the report under "Token analysis"."""
    return report(
        f"results/analysis/{{prompt_set}}/{{scorer}}/{{source}}/{name}.csv",
        caption="../report/token_analysis.rst",
        category="Token analysis",
        subcategory="{prompt_set}",
        labels={"model": "{scorer}", "tokens": "{source}", "table": table},
    )
