"""The planner's targets and the rules' outputs come from the same templates
(tokenscope.workflow.paths): dry runs of the test configs, whose `rule all` asks for exactly the
planner's targets and whose every planned file is a template filled with its job's wildcards.

Dry runs only: the checkpoint folders hold placeholder files, which no dry run reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from tokenscope.workflow import paths
from tokenscope.workflow.planning import plan_workflow

from helpers.paths import REPO, TEST_CONFIGS
from helpers.workflow_runner import PlannedJob, copy_prompts, parse_planned_jobs, snakemake, template_regex

TEMPLATES = [value for name, value in vars(paths).items() if name.isupper() and value.startswith("results/")]
# Between them: reference answers, a finetune, side-by-side pages, a derived prompt set, internals, outcomes.
CONFIGS = ["compare.yaml", "internals.yaml", "outcomes.yaml"]
# One model on one prompt set with reference answers: everything `all` asks for.
ONE_MODEL = {"models": {"base": {"path": "checkpoints/base"}}, "prompt_sets": {"tiny_a": "prompts/tiny_a.jsonl"}}
ONE_MODEL_TARGETS = [
    "results/tokens/tiny_a/base/base.parquet",
    "results/analysis/tiny_a/base/base/describe.csv",
    "results/figures/tiny_a/all/generated/entropy_hist_all.png",
    "results/figures/tiny_a/all/generated/entropy_hist_all.svg",
    "results/figures/tiny_a/all/generated/per_prompt",
    "results/summary/tiny_a/all/generated/describe.csv",
    "results/tokens/tiny_a/base/reference.parquet",
    "results/analysis/tiny_a/base/reference/describe.csv",
    "results/figures/tiny_a/all/reference/entropy_hist_all.png",
    "results/figures/tiny_a/all/reference/entropy_hist_all.svg",
    "results/figures/tiny_a/all/reference/per_prompt",
    "results/summary/tiny_a/all/reference/describe.csv",
    "results/token_view/tiny_a/base/base",
    "results/token_view/tiny_a/base/reference",
    "results/run/record.json",
]


def prepare(workdir: Path, config: dict) -> Path:
    """`config` written into `workdir` with its checkpoint folders (placeholders) and prompt files."""
    for entry in config["models"].values():
        folder = workdir / entry["path"]
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"placeholder: dry runs read no weights")
    copy_prompts(workdir, *(Path(entry).name for entry in config["prompt_sets"].values() if isinstance(entry, str)))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dry_run(workdir: Path, config: dict) -> list[PlannedJob]:
    return parse_planned_jobs(snakemake(workdir, str(prepare(workdir, config)), "--dry-run").stdout)


def planner_targets(workdir: Path, config: dict, monkeypatch) -> list[str]:
    """plan.final_targets() of `config` as the workflow plans it (validated, in `workdir`)."""
    validate(config, str(REPO / "schemas" / "config.schema.yaml"), set_default=True)
    monkeypatch.chdir(workdir)
    return plan_workflow(config).final_targets()


def rule_all(jobs: list[PlannedJob]) -> list[str]:
    (target,) = [job for job in jobs if job.rule == "all"]
    return target.input


@pytest.mark.parametrize("name", CONFIGS)
def test_targets_and_outputs_are_the_templates(tmp_path, monkeypatch, name):
    config = yaml.safe_load((TEST_CONFIGS / name).read_text())
    jobs = dry_run(tmp_path, config)
    assert rule_all(jobs) == planner_targets(tmp_path, config, monkeypatch)
    unmatched = [
        (job.rule, output)
        for job in jobs
        for output in job.output
        if not any(template_regex(template, job.wildcards).fullmatch(output) for template in TEMPLATES)
    ]
    assert unmatched == []
    assert {job.rule for job in jobs} >= {"generate_shard", "gather_tokens", "analyze_tokens", "run_record"}


def test_one_model_plans_these_targets(tmp_path):
    jobs = dry_run(tmp_path, ONE_MODEL)
    assert rule_all(jobs) == ONE_MODEL_TARGETS
    # every target is written by a planned job
    written = {output for job in jobs for output in job.output}
    assert set(ONE_MODEL_TARGETS) <= written
