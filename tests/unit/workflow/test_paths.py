"""Output path templates named once (tokenscope.workflow.paths): the rules and the planner use
them and spell no result path of their own."""

from __future__ import annotations

import re

from snakemake.utils import validate

from tokenscope.workflow import paths
from tokenscope.workflow.planning import Plan, PromptSetFacts

from helpers.paths import REPO
from helpers.workflow_runner import template_regex

TEMPLATES = [value for name, value in vars(paths).items() if name.isupper() and value.startswith("results/")]
# A quoted path under results/ (a string or an f-string).
RESULT_PATH = re.compile(r"""["']results/""")


def test_fill_leaves_the_other_wildcards():
    assert paths.fill(paths.TOKENS, source="reference") == "results/tokens/{prompt_set}/{model}/reference.parquet"
    assert paths.OWN_TOKENS == "results/tokens/{prompt_set}/{model}/{model}.parquet"
    assert paths.fill(paths.TRENDS, suffix="png", group="all") == "results/comparison/{prompt_set}/all/trends.png"


def test_rules_spell_no_result_path_but_benchmarks():
    """Every result path of a rule (output, input, input function) is a template of paths; only the
    benchmark files, which nothing else reads, are spelled in their rule."""
    spelled = []
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        directive = None
        for number, line in enumerate(smk.read_text().splitlines(), 1):
            heading = re.match(r"^(?:    )?(\w+):\s*$", line) or re.match(r"^(?:rule|def) ", line)
            if heading:
                directive = heading.group(1) if heading.groups() else None
            if RESULT_PATH.search(line) and directive != "benchmark":
                spelled.append(f"{smk.name}:{number}: {line.strip()}")
    assert spelled == []


def test_the_planner_spells_no_result_path():
    workflow = REPO / "src" / "tokenscope" / "workflow"
    spelled = [
        f"{module.name}: {line.strip()}"
        for module in sorted(workflow.glob("*.py"))
        if module.name != "paths.py"
        for line in module.read_text().splitlines()
        if RESULT_PATH.search(line)
    ]
    assert spelled == []


def test_every_target_is_a_template():
    """A plan with every section (finetune, internals, comparison, side by side, outcomes) asks only
    for files of the templates."""
    facts = {
        "ref": PromptSetFacts("prompts/ref.jsonl", None, has_references=True, answers_sha256="0" * 64),
        "plain": PromptSetFacts("prompts/plain.jsonl"),
        "ref_filler": PromptSetFacts("prompts/ref.jsonl", {"text": " ...", "count": 2, "place": "before_question"}),
    }
    config = {
        "models": {name: {"hub": f"org/{name}"} for name in ("m0", "m1")},
        "prompt_sets": {
            "ref": "prompts/ref.jsonl",
            "plain": "prompts/plain.jsonl",
            "ref_filler": {"from": "ref", "insert": facts["ref_filler"].insertion},
        },
        "finetune": {"base": "m0", "n_checkpoints": 2, "steps": 4},
        "internals": {
            "marker_attention": {"prompt_sets": ["ref"]},
            "attention_positions": {"prompt_sets": ["ref_filler"]},
            "depth": {"prompt_sets": ["plain"]},
        },
        "comparison": {"sources": ["a", "b", "reference"]},
        "generation": {"prompt_sets": ["ref", "plain"]},
    }
    validate(config, str(REPO / "schemas" / "config.schema.yaml"), set_default=True)
    plan = Plan(config, facts)
    targets = plan.final_targets()
    sections = ("results/pairs/", "results/side_by_side/", "results/outcomes/", "results/figures/internals/")
    assert all(any(target.startswith(section) for target in targets) for section in sections)
    regexes = [template_regex(template) for template in TEMPLATES]
    assert [target for target in targets if not any(regex.fullmatch(target) for regex in regexes)] == []
