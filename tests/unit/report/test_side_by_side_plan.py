"""Planning of the side-by-side view (config `side_by_side`, tokenscope.workflow.planning): default
pairs (each group's base and last model), prompt sets (the compared ones), shared texts, targets
and the one-line errors of bad names."""

from __future__ import annotations

import pytest
from snakemake.utils import validate

from tokenscope.errors import ConfigError
from tokenscope.workflow.planning import Plan, PromptSetFacts

from helpers.paths import REPO

SCHEMA = REPO / "schemas" / "config.schema.yaml"
FACTS = {
    "ref": PromptSetFacts("prompts/ref.jsonl", None, has_references=True),
    "plain": PromptSetFacts("prompts/plain.jsonl", None, has_references=False),
}


def plan(models=("m0", "m1", "m2"), **sections) -> Plan:
    config = {
        "models": {name: {"hub": f"org/{name}"} for name in models},
        "prompt_sets": {"ref": "prompts/ref.jsonl", "plain": "prompts/plain.jsonl"},
        **sections,
    }
    validate(config, str(SCHEMA), set_default=True)
    return Plan(config, FACTS)


def test_defaults_are_each_groups_base_and_last_model_on_the_compared_sets():
    p = plan(
        groups={"all": ["m0", "m1", "m2"], "pair": ["m1", "m2"], "solo": ["m0"]},
        comparison={"prompt_sets": ["ref"], "pairs": "base", "sources": ["a"]},
    )
    assert p.side_by_side_pairs == [("m0", "m2"), ("m1", "m2")] and p.side_by_side_sets == ["ref"]
    # Shared texts: A's generations and the reference answers (ref has them).
    assert p.side_by_side_targets() == [
        "results/side_by_side/ref/m0/m2/m0",
        "results/side_by_side/ref/m0/m2/reference",
        "results/side_by_side/ref/m1/m2/m1",
        "results/side_by_side/ref/m1/m2/reference",
    ]
    targets = p.final_targets()
    assert set(p.side_by_side_targets()) <= set(targets) and len(targets) == len(set(targets))
    assert p.side_by_side_generations("ref", "m0", "m2") == [
        "results/generations/ref/m0.parquet",
        "results/generations/ref/m2.parquet",
    ]


def test_listed_pairs_sets_and_sources():
    p = plan(
        side_by_side={"pairs": [["m2", "m1"]], "prompt_sets": ["plain", "ref"], "sources": ["b", "reference"]},
        generation={"prompt_sets": ["plain"]},
    )
    assert p.side_by_side_targets() == [
        "results/side_by_side/plain/m2/m1/m1",  # no references in plain
        "results/side_by_side/ref/m2/m1/m1",
        "results/side_by_side/ref/m2/m1/reference",
    ]
    assert p.side_by_side_generations("ref", "m2", "m1") == []  # ref is not generated: no generations shown
    assert plan(side_by_side={"prompt_sets": []}).side_by_side_targets() == []
    assert plan(models=("m0",)).side_by_side_targets() == []  # nothing to compare


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"pairs": [["m0", "nope"]]}, "side_by_side.pairs: unknown model 'nope'"),
        ({"pairs": [["m1", "m1"]]}, "side_by_side.pairs: [m1, m1] pairs a model with itself"),
        ({"prompt_sets": ["nope"]}, "side_by_side.prompt_sets: unknown prompt set 'nope'"),
    ],
)
def test_bad_names_are_one_line_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        plan(side_by_side=section)
    assert "\n" not in str(error.value)
