"""Which jobs a config change reruns: a knob that cannot change a job's outputs
(memory, speed, threads, a plotting setting, the list of prompt sets) reruns nothing that does not
depend on it.

One real run of tests/configs/internals.yaml (tiny Llama and GPT-2 with one tokenizer: generation,
teacher forcing on tiny_a's references, cross-scoring of the pair on a's, b's and the reference
tokens, and every internals analysis), then a dry run per changed knob. The changed config is
written to the path of the run's own config, so the run record (which names the config files) is
not changed by the path alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow

BASE_CONFIG = yaml.safe_load((REPO / "tests" / "configs" / "internals.yaml").read_text())
# Rules that draw figures with vector copies: the only ones whose outputs analysis.vector_format changes.
FIGURE_RULES = {
    "plot_entropy_hist",
    "plot_prompt_figures",
    "plot_marker_attention",
    "plot_attention_positions",
    "plot_depth",
    "plot_trends",  # the comparison's trend figure
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("rerun-triggers")
    save_tiny_checkpoint(workdir / "checkpoints" / "llama", "llama", seed=0)
    save_tiny_checkpoint(workdir / "checkpoints" / "gpt2", "gpt2", seed=1)
    copy_prompts(workdir, "tiny_a.jsonl", "tiny_b.jsonl")
    config = workdir / "run.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG, sort_keys=False))
    snakemake(workdir, str(config), "--cores", "2")
    assert planned_jobs(workdir, str(config)) == []
    return workdir


def jobs_after(workdir: Path, change: Callable[[dict[str, Any]], None]) -> list[tuple[str, dict[str, str]]]:
    """The jobs (but `all`) a dry run plans after `change` edits the run's config in place."""
    config = copy.deepcopy(BASE_CONFIG)
    change(config)
    path = workdir / "run.yaml"
    original = path.read_text()
    try:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [(rule, wildcards) for rule, wildcards in planned_jobs(workdir, str(path)) if rule != "all"]
    finally:
        path.write_text(original)


def setting(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets config[keys[0]][keys[1]]... to `value`, making sections as needed."""

    def change(config: dict[str, Any]) -> None:
        section = config
        for key in keys[:-1]:
            section = section.setdefault(key, {})
        section[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    ("keys", "value"),
    [
        (("scoring", "chunk_rows"), 64),
        (("scoring", "batch_size"), 2),
        (("generation", "batch_size"), 2),
        (("runtime", "threads"), 2),
        (("runtime", "mem_mb"), 4000),
        (("runtime", "runtime_min"), 30),
        (("internals", "marker_attention", "batch_size"), 1),
    ],
    ids=lambda item: ".".join(item) if isinstance(item, tuple) else str(item),
)
def test_speed_and_memory_knobs_rerun_nothing(finished_run, keys, value):
    assert jobs_after(finished_run, setting(*keys, value=value)) == []


def test_logit_lens_window_reruns_only_the_depth_plot(finished_run):
    jobs = jobs_after(finished_run, setting("internals", "depth", "max_positions", value=12))
    assert sorted(jobs, key=lambda job: job[1]["model"]) == [
        ("plot_depth", {"prompt_set": "tiny_a_filler", "model": "gpt2"}),
        ("plot_depth", {"prompt_set": "tiny_a_filler", "model": "llama"}),
    ]
    jobs = jobs_after(finished_run, setting("internals", "depth", "chunk_tokens", value=3))
    assert {rule for rule, _ in jobs} == {"plot_depth"}


def test_vector_format_reruns_only_figure_rules(finished_run):
    jobs = jobs_after(finished_run, setting("analysis", "vector_format", value="pdf"))
    rules = {rule for rule, _ in jobs}
    assert rules <= FIGURE_RULES, f"not figure rules: {sorted(rules - FIGURE_RULES)}"
    # Every rule that writes a vector copy makes the new one (`all` requests the PNGs only, so a rule
    # reruns by its params, not by the missing vector file).
    assert rules == FIGURE_RULES, f"figure rules that do not rerun: {sorted(FIGURE_RULES - rules)}"


def test_a_new_prompt_set_runs_only_its_own_jobs(finished_run):
    jobs = jobs_after(finished_run, setting("prompt_sets", "tiny_b", value="prompts/tiny_b.jsonl"))
    others = sorted({(rule, w.get("prompt_set")) for rule, w in jobs if w.get("prompt_set") != "tiny_b"})
    assert others == [], f"jobs of other prompt sets or of the whole run: {others}"
    rules = {rule for rule, _ in jobs}
    assert {"cross_score", "analyze_tokens", "compare_group", "token_view"} <= rules
    assert any(rule.startswith("generate") for rule in rules)
    assert "teacher_force" not in rules  # tiny_b has no reference answers


def test_a_prompt_set_added_to_an_internals_analysis_runs_only_its_jobs(finished_run):
    def change(config: dict[str, Any]) -> None:
        config["internals"]["depth"]["prompt_sets"] = ["tiny_a_filler", "tiny_a"]

    jobs = jobs_after(finished_run, change)
    assert {(rule, wildcards["prompt_set"]) for rule, wildcards in jobs} == {
        ("depth", "tiny_a"),
        ("plot_depth", "tiny_a"),
    }
    assert len(jobs) == 4  # both models


def test_an_answer_pattern_regrades_without_generating(finished_run):
    """answers.patterns.<set> reruns that set's gather_generation (the grading) and the readers of
    its generations table, never a generation, the per-token gather or its analyses; the tolerance
    changes nothing where no prompt has an answer."""
    jobs = jobs_after(finished_run, setting("answers", "patterns", value={"tiny_a": r"Answer:\s*(\S+)"}))
    gathers = {(w["prompt_set"], w["model"]) for rule, w in jobs if rule == "gather_generation"}
    assert gathers == {("tiny_a", "llama"), ("tiny_a", "gpt2")}
    rules = {rule for rule, _ in jobs}
    assert not rules & {
        "generate_shard",
        "gather_tokens",
        "analyze_tokens",
        "teacher_force",
        "gather_reference",
        "plot_entropy_hist",
    }
    assert {w["prompt_set"] for _, w in jobs if "prompt_set" in w} == {"tiny_a"}
    assert jobs_after(finished_run, setting("answers", "tolerance", value=0.1)) == []
