"""The internals rules end to end on tiny Llama and GPT-2 checkpoints (tests/configs/internals.yaml)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def internals_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("internals-workflow")
    save_tiny_checkpoint(workdir / "checkpoints" / "llama", "llama", seed=0)
    save_tiny_checkpoint(workdir / "checkpoints" / "gpt2", "gpt2", seed=1)
    copy_prompts(workdir, "tiny_a.jsonl")
    snakemake(workdir, "internals.yaml", "--cores", "2")
    return workdir


def test_internals_outputs_and_figures(internals_run):
    results = internals_run / "results"
    for model in ("llama", "gpt2"):
        generations = pd.read_parquet(results / "generations" / "tiny_a_filler" / f"{model}.parquet")
        spans = generations[["inserted_start", "inserted_end"]]
        assert (spans["inserted_end"] - spans["inserted_start"] > 0).all()
        plain = pd.read_parquet(results / "generations" / "tiny_a" / f"{model}.parquet")
        assert plain["inserted_start"].isna().all()
        markers = pd.read_parquet(results / "internals" / "tiny_a" / model / "marker_attention.parquet")
        tokens = pd.read_parquet(results / "tokens" / "tiny_a" / model / f"{model}.parquet")
        assert len(markers) == len(tokens) and markers["marker_share"].between(0, 1).all()
        # Prompt "add" has "Think" in its system prompt: its queries see marker tokens.
        assert (markers.loc[markers["prompt_id"] == "add", "n_marker_tokens"] > 0).all()
        positions = pd.read_parquet(results / "internals" / "tiny_a_filler" / model / "attention_positions.parquet")
        assert set(zip(positions["layer"], positions["head"], strict=True)) == {(0, 1), (1, 3)}
        assert positions["in_span"].any()
        lens = pd.read_parquet(results / "internals" / "tiny_a_filler" / model / "logit_lens.parquet")
        assert set(lens["prompt_id"]) == {"add", "area"} and lens["layer"].max() == 2
        convergence = pd.read_parquet(results / "internals" / "tiny_a_filler" / model / "convergence.parquet")
        assert (convergence.loc[convergence["depth"] == 2, "distance"] == 0).all()
        figures = results / "figures" / "internals" / "tiny_a_filler" / model
        assert {p.name for p in (figures / "depth").glob("*.png")} == {
            "convergence-add.png",
            "convergence-area.png",
            "logit_lens-add.png",
            "logit_lens-area.png",
        }
        assert len(list((figures / "attention_positions").glob("*.png"))) == 3
    assert (results / "figures" / "internals" / "tiny_a" / "all" / "marker_attention.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    for log in (internals_run / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log


def test_changed_heads_rerun_only_attention_positions(internals_run, tmp_path):
    assert planned_jobs(internals_run, "internals.yaml") == []
    config = yaml.safe_load((REPO / "tests" / "configs" / "internals.yaml").read_text())
    config["internals"]["attention_positions"]["heads"] = [[0, 0]]
    edited = tmp_path / "edited.yaml"  # an absolute path replaces tests/configs/ in these helpers
    edited.write_text(yaml.safe_dump(config, sort_keys=False))  # key order is part of params' provenance
    jobs = planned_jobs(internals_run, str(edited))
    # run_record reruns because the report's front page names the config file, which is another one.
    assert {rule for rule, _ in jobs} == {"attention_positions", "plot_attention_positions", "run_record", "all"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"internals": {"attention_positions": {"prompt_sets": ["tiny_a"]}}}, "inserts no tokens"),
        ({"internals": {"depth": {"prompt_sets": ["nope"]}}}, "internals.depth.prompt_sets: unknown prompt set 'nope'"),
        (
            {
                "prompt_sets": {
                    "tiny_a": "prompts/tiny_a.jsonl",
                    "f": {"from": "missing", "insert": {"text": ".", "count": 2}},
                }
            },
            "prompt_sets.f.from: unknown prompt set 'missing'",
        ),
        (
            {"prompt_sets": {"tiny_a": "prompts/tiny_a.jsonl", "f": {"from": "tiny_a", "insert": {"count": 2}}}},
            "prompt_sets.f",
        ),
    ],
)
def test_bad_internals_config_is_named(tmp_path, change, message):
    config = yaml.safe_load((REPO / "tests" / "configs" / "internals.yaml").read_text())
    for key, value in change.items():
        if key == "internals":
            for analysis, settings in value.items():
                config["internals"][analysis].update(settings)
        else:
            config[key] = value
    config["internals"]["depth"]["prompt_sets"] = [
        s for s in config["internals"]["depth"]["prompt_sets"] if s in config["prompt_sets"] or s == "nope"
    ]
    config["internals"]["attention_positions"]["prompt_sets"] = [
        s for s in config["internals"]["attention_positions"]["prompt_sets"] if s in config["prompt_sets"]
    ]
    copy_prompts(tmp_path, "tiny_a.jsonl")
    for name, arch in (("llama", "llama"), ("gpt2", "gpt2")):
        save_tiny_checkpoint(tmp_path / "checkpoints" / name, arch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tmp_path, str(path), "--dry-run", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output and "Traceback" not in output, output[-3000:]
