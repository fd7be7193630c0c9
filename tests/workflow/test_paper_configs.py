"""The paper-figure configs (config/paper/) validate against the schema and build their DAG.

They name hub models and local checkpoint folders of a GPU site: the dry runs replace the local
folders with tiny checkpoints (nothing is downloaded in a dry run) and check the planned rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import planned_jobs, snakemake

PAPER = sorted((REPO / "config" / "paper").glob("*.yaml"))
EXPECTED_RULES = {
    "marker_attention": {"generate_shard", "marker_attention", "plot_marker_attention"},
    "filler_attention": {"attention_positions", "plot_attention_positions"},
    "depth_convergence": {"depth", "plot_depth"},
    "checkpoint_comparison": {"generate_shard", "cross_score", "compare_group"},
    "logit_lens": {"depth", "plot_depth"},
}


def local_copy(config_path: Path, workdir: Path) -> Path:
    """The config with its checkpoint folders replaced by tiny ones and prompt paths made absolute."""
    config = yaml.safe_load(config_path.read_text())
    for name, entry in config["models"].items():
        if "path" in entry:
            entry["path"] = str(save_tiny_checkpoint(workdir / "checkpoints" / name))
    for name, entry in config["prompt_sets"].items():
        if isinstance(entry, str):
            config["prompt_sets"][name] = str(REPO / entry)
    out = workdir / config_path.name
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def test_every_figure_family_has_a_config():
    assert {p.stem for p in PAPER} == set(EXPECTED_RULES)


@pytest.mark.parametrize("config_path", PAPER, ids=lambda p: p.stem)
def test_paper_config_dry_runs(tmp_path, config_path):
    jobs = planned_jobs(tmp_path, str(local_copy(config_path, tmp_path)))
    rules = {rule for rule, _ in jobs}
    assert EXPECTED_RULES[config_path.stem] <= rules, rules
    assert all(rule != "prepare_model" or wildcards for rule, wildcards in jobs)


def test_missing_checkpoint_of_a_paper_config_is_named(tmp_path):
    config_path = REPO / "config" / "paper" / "checkpoint_comparison.yaml"
    result = snakemake(tmp_path, str(config_path), "--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "models.checkpoint-1-of-10: checkpoint folder not found" in output
    assert "/data/llms/Qwen2.5-1.5B-Instruct-finetuned/checkpoint-1-of-10" in output
