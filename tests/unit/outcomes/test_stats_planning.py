"""Planning of the outcome statistics (tokenscope.workflow.planning, config `outcomes`): which
prompt sets, which k values of pass@k, the targets, and the one-line errors."""

from __future__ import annotations

import pytest
from snakemake.utils import validate

from tokenscope.errors import ConfigError
from tokenscope.workflow.planning import Plan, PromptSetFacts

from helpers.paths import REPO

SCHEMA = REPO / "schemas" / "config.schema.yaml"
FACTS = {
    "graded": PromptSetFacts("prompts/graded.jsonl", answers_sha256="0" * 64),
    "other": PromptSetFacts("prompts/other.jsonl", answers_sha256="1" * 64),
    "plain": PromptSetFacts("prompts/plain.jsonl"),
}


def plan(**sections) -> Plan:
    config = {
        "models": {name: {"hub": f"org/{name}"} for name in ("m0", "m1")},
        "prompt_sets": {name: facts.file for name, facts in FACTS.items()},
        "groups": {"series": ["m0", "m1"], "solo": ["m1"]},
        **sections,
    }
    validate(config, str(SCHEMA), set_default=True)
    return Plan(config, FACTS)


def test_default_is_every_generated_set_with_answers():
    p = plan(generation={"prompt_sets": ["graded", "plain"], "n_samples": 4})
    assert p.outcome_sets == ["graded"] and p.pass_at_k == [1, 2, 3, 4]
    targets = p.outcome_targets()
    assert "results/outcomes/graded/series/tables" in targets
    assert "results/outcomes/graded/solo/entropy_fit.svg" in targets
    assert not any("plain" in t for t in targets) and set(targets) <= set(p.final_targets())
    assert p.outcome_generation_files("graded", "series") == [
        "results/generations/graded/m0.parquet",
        "results/generations/graded/m1.parquet",
    ]
    assert p.outcome_token_files("graded", "series") == [
        "results/tokens/graded/m0/m0.parquet",
        "results/tokens/graded/m1/m1.parquet",
    ]


def test_settings_are_the_params():
    p = plan(generation={"n_samples": 8}, outcomes={"pass_at_k": [1, 4, 8], "seed": 3})
    assert p.outcome_settings() == {
        "pass_at_k": [1, 4, 8],
        "high_entropy_quantile": 0.8,
        "n_boot": 2000,
        "ci": 0.95,
        "seed": 3,
    }
    assert plan(generation={"n_samples": 8}, outcomes={"pass_at_k": 3}).pass_at_k == [1, 2, 3]
    assert plan(outcomes={"prompt_sets": []}).outcome_targets() == []


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"outcomes": {"prompt_sets": ["plain"]}},
            "outcomes.prompt_sets: prompt set 'plain' (prompts/plain.jsonl) has no answers: "
            "no prompt line has an 'answer'",
        ),
        (
            {"generation": {"prompt_sets": ["plain"]}, "outcomes": {"prompt_sets": ["graded"]}},
            "outcomes.prompt_sets: unknown generated prompt set 'graded'",
        ),
        (
            {"generation": {"n_samples": 2}, "outcomes": {"pass_at_k": [1, 3]}},
            "outcomes.pass_at_k: k = 3 is greater than generation.n_samples = 2 "
            "(pass@k needs at least k samples per prompt)",
        ),
    ],
)
def test_bad_outcome_config_is_one_line(sections, message):
    with pytest.raises(ConfigError) as error:
        plan(**sections)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
