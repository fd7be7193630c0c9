"""The workflow's plan from a config dict: models, views, pair tables and targets, without Snakemake runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from snakemake.utils import validate

from tokenscope.errors import ConfigError
from tokenscope.workflow.devices import gpu_count
from tokenscope.workflow.planning import Plan, PromptSetFacts, load_prompt_sets, model_files, plan_workflow

from helpers.paths import REPO, TEST_DATA

SCHEMA = REPO / "schemas" / "config.schema.yaml"
WITH_REFERENCES = PromptSetFacts("prompts/ref.jsonl", None, has_references=True)
WITHOUT_REFERENCES = PromptSetFacts("prompts/plain.jsonl", None, has_references=False)
FILLER = PromptSetFacts("prompts/ref.jsonl", {"text": " ...", "count": 2, "place": "before_question"}, True)
FACTS = {"ref": WITH_REFERENCES, "plain": WITHOUT_REFERENCES, "ref_filler": FILLER}


def make_config(models=("m0", "m1", "m2"), **sections):
    """A config as the workflow sees it: validated against the schema with its defaults filled in."""
    config = {
        "models": {name: {"hub": f"org/{name}"} for name in models},
        "prompt_sets": {
            "ref": "prompts/ref.jsonl",
            "plain": "prompts/plain.jsonl",
            "ref_filler": {"from": "ref", "insert": {"text": " ...", "count": 2, "place": "before_question"}},
        },
        **sections,
    }
    validate(config, str(SCHEMA), set_default=True)
    return config


def plan(**sections) -> Plan:
    models = sections.pop("models", ("m0", "m1", "m2"))
    return Plan(make_config(models, **sections), FACTS)


def pairs(p: Plan) -> list[tuple[str, str, str, str]]:
    return [tuple(table) for table in p.pair_tables]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_pairs_base_and_all(k):
    models = tuple(f"m{i}" for i in range(k))
    comparison = {"prompt_sets": ["plain"], "sources": ["a"]}
    base = plan(models=models, comparison={**comparison, "pairs": "base"})
    every = plan(models=models, comparison={**comparison, "pairs": "all"})
    assert base.group_pairs("all") == [("m0", f"m{i}") for i in range(1, k)]
    assert len(every.group_pairs("all")) == k * (k - 1) // 2
    assert all(models.index(a) < models.index(b) for a, b in every.group_pairs("all"))
    assert [(a, b) for _, a, b, _ in pairs(every)] == every.group_pairs("all")


def test_pair_sources_follow_the_config_and_references():
    comparison = {"sources": ["a", "b", "reference"], "pairs": "base"}
    p = plan(comparison=comparison, generation={"prompt_sets": ["ref", "plain"]})
    assert p.pair_sources("ref", "m0", "m1") == ["m0", "m1", "reference"]
    assert p.pair_sources("plain", "m0", "m1") == ["m0", "m1"]
    assert ("ref", "m0", "m1", "reference") in pairs(p) and ("plain", "m0", "m1", "reference") not in pairs(p)


def test_pairs_shared_by_groups_are_planned_once():
    groups = {"all": ["m0", "m1", "m2"], "first_two": ["m0", "m1"], "again": ["m0", "m1"], "solo": ["m2"]}
    p = plan(groups=groups, comparison={"prompt_sets": ["plain"], "pairs": "all", "sources": ["a"]})
    assert pairs(p) == [("plain", "m0", "m1", "m0"), ("plain", "m0", "m2", "m0"), ("plain", "m1", "m2", "m1")]
    assert p.compared_groups() == ["all", "first_two", "again"]
    targets = p.comparison_targets()
    assert len(targets) == len(set(targets)) == 3 + 3 * 2  # pair tables; each group's trends PNG and SVG
    assert p.scoring_pairs("plain", "m0", "m0") == [
        "results/pairs/plain/m0/m1/m0.parquet",
        "results/pairs/plain/m0/m2/m0.parquet",
    ]
    assert p.scoring_pairs("plain", "m1", "m0") == ["results/pairs/plain/m0/m1/m0.parquet"]
    assert p.scoring_pairs("plain", "m2", "m2") == []


def test_views_with_and_without_references_and_teacher_forcing():
    p = plan()
    assert p.views("ref") == ["generated", "reference"]
    assert p.views("plain") == ["generated"]
    assert plan(scoring={"teacher_forcing": False}).views("ref") == ["generated"]
    targets = p.final_targets()
    assert "results/tokens/ref/m1/reference.parquet" in targets
    assert "results/tokens/ref/m1/m1.parquet" in targets
    assert "results/summary/ref/all/reference/describe.csv" in targets
    assert not any(t.startswith("results/tokens/plain/") and t.endswith("reference.parquet") for t in targets)
    assert "results/token_view/ref/m2/reference" in p.token_view_targets()
    assert targets[-1] == "results/run/record.json"


def test_targets_are_unique_and_cover_each_section():
    p = plan(
        internals={
            "models": ["m1"],
            "marker_attention": {"prompt_sets": ["ref"]},
            "attention_positions": {"prompt_sets": ["ref_filler"]},
            "depth": {"prompt_sets": ["plain"]},
        },
    )
    targets = p.final_targets()
    assert len(targets) == len(set(targets))
    assert p.internals_targets() == [
        "results/figures/internals/ref/all/marker_attention.png",
        "results/figures/internals/ref/all/marker_attention.svg",
        "results/figures/internals/ref_filler/m1/attention_positions",
        "results/figures/internals/plain/m1/depth",
    ]
    assert p.marker_attention_tables("ref", "all") == ["results/internals/ref/m1/marker_attention.parquet"]
    assert p.source_prompt_set("ref_filler") == "ref"
    assert p.prompt_insertion("ref_filler") == FILLER.insertion


def test_marker_attention_figure_only_for_groups_with_internals_models():
    """A group none of whose models run the internals would get a figure job with no inputs."""
    p = plan(
        groups={"with": ["m0", "m1"], "without": ["m2"]},
        internals={"models": ["m0"], "marker_attention": {"prompt_sets": ["ref"]}},
    )
    assert p.internals_targets() == [
        "results/figures/internals/ref/with/marker_attention.png",
        "results/figures/internals/ref/with/marker_attention.svg",
    ]
    assert p.marker_attention_tables("ref", "with") == ["results/internals/ref/m0/marker_attention.parquet"]


def test_finetune_series_follows_its_base():
    p = plan(models=("base", "other"), finetune={"base": "base", "n_checkpoints": 2, "steps": 4})
    assert p.models == ["base", "other", "checkpoint-1-of-2", "checkpoint-2-of-2"]
    assert p.groups == {"all": p.models}
    assert p.model_entries["checkpoint-2-of-2"] == {"path": "results/finetune/base/checkpoint-2-of-2"}
    assert p.finetune_options == {"n_checkpoints": 2, "steps": 4}
    assert "base" not in p.finetune_options
    config = make_config(("base",), finetune={"base": "base", "n_checkpoints": 2, "steps": 4})
    assert "checkpoint-1-of-2" not in config["models"]  # planning does not change the config
    files = model_files(config)
    assert files["checkpoint-1-of-2"] == files["checkpoint-2-of-2"] == ["results/finetune/base"]
    assert files["base"] == []  # a hub model has no local inputs


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"groups": {"pair": ["m0", "nope"]}}, "groups.pair: unknown model 'nope'; models: ['m0', 'm1', 'm2']"),
        (
            {"generation": {"prompt_sets": ["nope"]}},
            "generation.prompt_sets: unknown prompt set 'nope'; prompt sets: ['plain', 'ref', 'ref_filler']",
        ),
        (
            {"comparison": {"prompt_sets": ["nope"]}},
            "comparison.prompt_sets: unknown prompt set 'nope'; prompt sets: ['plain', 'ref', 'ref_filler']",
        ),
        (
            {"generation": {"prompt_sets": ["ref"]}, "token_view": {"prompt_sets": ["plain"]}},
            "token_view.prompt_sets: unknown generated prompt set 'plain'; generated prompt sets: ['ref']",
        ),
        ({"internals": {"models": ["nope"]}}, "internals.models: unknown model 'nope'; models: ['m0', 'm1', 'm2']"),
        (
            {"internals": {"depth": {"prompt_sets": ["nope"]}}},
            "internals.depth.prompt_sets: unknown prompt set 'nope'; prompt sets: ['plain', 'ref', 'ref_filler']",
        ),
        (
            {"internals": {"attention_positions": {"prompt_sets": ["ref"]}}},
            "internals.attention_positions.prompt_sets: 'ref' inserts no tokens; "
            "list prompt sets defined with 'from' and 'insert'",
        ),
        ({"finetune": {"base": "nope"}}, "finetune.base: unknown model 'nope'; models: ['m0', 'm1', 'm2']"),
    ],
)
def test_unknown_names_are_one_line_naming_the_key(sections, message):
    with pytest.raises(ConfigError) as error:
        plan(**sections)
    assert str(error.value) == message


def test_finetune_checkpoint_name_taken():
    message = r"^models\.checkpoint-1-of-2: this name is taken by the finetune's checkpoint 1$"
    with pytest.raises(ConfigError, match=message):
        plan(models=("base", "checkpoint-1-of-2"), finetune={"base": "base", "n_checkpoints": 2, "steps": 4})


def test_plan_workflow_reads_prompt_sets_and_checkpoint_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts").mkdir()
    for name in ("tiny_a.jsonl", "tiny_b.jsonl"):
        (tmp_path / "prompts" / name).write_text((TEST_DATA / name).read_text())
    (tmp_path / "ckpt").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "ckpt" / name).write_text("{}")
    prompt_sets = {"a": "prompts/tiny_a.jsonl", "b": "prompts/tiny_b.jsonl"}
    config = {"models": {"m": {"path": "ckpt"}}, "prompt_sets": prompt_sets}
    validate(config, str(SCHEMA), set_default=True)
    assert load_prompt_sets(config["prompt_sets"]) == {
        "a": PromptSetFacts("prompts/tiny_a.jsonl", None, True),
        "b": PromptSetFacts("prompts/tiny_b.jsonl", None, False),
    }
    p = plan_workflow(config)
    assert p.model_files == {"m": ["ckpt/config.json", "ckpt/model.safetensors"]}
    assert p.views("a") == ["generated", "reference"] and p.views("b") == ["generated"]


def test_gpu_resource_without_torch(tmp_path):
    gpus, device = tmp_path / "gpus", tmp_path / "nvidia0"
    none = {"nvidia_gpus": gpus, "nvidia_device": device}
    assert gpu_count("cuda:1", {}, **none) == 1
    assert gpu_count("cpu", {}, **none) == gpu_count("mps", {}, **none) == 0
    assert gpu_count("auto", {}, **none) == 0
    (gpus / "0000:3b:00.0").mkdir(parents=True)
    assert gpu_count("auto", {}, **none) == 1
    assert gpu_count("auto", {"CUDA_VISIBLE_DEVICES": "0"}, **none) == 1
    assert gpu_count("auto", {"CUDA_VISIBLE_DEVICES": ""}, **none) == 0
    assert gpu_count("auto", {"CUDA_VISIBLE_DEVICES": "-1"}, **none) == 0
    assert gpu_count("cpu", {"CUDA_VISIBLE_DEVICES": "0"}, **none) == 0
    gpus.rename(tmp_path / "elsewhere")
    device.touch()
    assert gpu_count("auto", {}, **none) == 1


def test_planning_does_not_import_torch():
    code = (
        "import sys, tokenscope.workflow.planning, tokenscope.workflow.devices; "
        "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_vector_copies_are_targets():
    """`all` asks for each figure's vector copy, so a changed analysis.vector_format makes the new one."""
    p = plan(analysis={"vector_format": "pdf"}, internals={"marker_attention": {"prompt_sets": ["ref"]}})
    targets = p.final_targets()
    for figure in (
        "results/figures/ref/all/generated/entropy_hist_all",
        "results/figures/ref/all/reference/entropy_hist_all",
        "results/comparison/ref/all/trends",
        "results/figures/internals/ref/all/marker_attention",
    ):
        assert f"{figure}.png" in targets and f"{figure}.pdf" in targets
    assert not any(target.endswith(".svg") for target in targets)


def test_pair_summary_states_the_pair_count():
    models = tuple(f"m{i}" for i in range(5))
    every = plan(models=models, comparison={"prompt_sets": ["ref", "plain"], "pairs": "all"})
    # 10 pairs; sources a and b on both sets, reference only on the set with references
    assert len(every.pair_tables) == 10 * (3 + 2)
    assert every.pair_summary() == (
        "comparison.pairs: all: model pairs per group 'all' K=5: K(K-1)/2 = 10; each scored on the tokens "
        "of each source of comparison.sources, per compared prompt set: 50 pair tables (cross_score jobs) in all"
    )
    base = plan(models=models, comparison={"prompt_sets": ["plain"], "pairs": "base", "sources": ["a"]})
    assert "K=5: K-1 = 4;" in base.pair_summary() and base.pair_summary().endswith(
        ": 4 pair tables (cross_score jobs) in all"
    )
    assert plan(models=("m0",)).pair_summary() is None


def test_pair_score_span_only_for_reference_answers():
    p = plan(scoring={"score_span": "all"})
    assert p.pair_score_span("reference") == "all"
    assert p.pair_score_span("m0") is None


def test_pair_tables_scale_linearly_in_their_count():
    """50 models, pairs all: the enumeration is one pass (no list membership tests)."""
    models = tuple(f"m{i:02d}" for i in range(50))
    p = plan(models=models, comparison={"pairs": "all"})
    assert len(p.pair_tables) == len(set(p.pair_tables)) == 1225 * (3 + 2 + 3)
    assert len(p.scoring_pairs("ref", "m07", "m07")) == 49  # pairs in which m07 scored its own tokens


def test_model_resources_scale_with_the_models_and_data(tmp_path, monkeypatch):
    from tokenscope.workflow.resources import model_mem_mb, model_runtime

    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "results" / "models" / "m" / "manifest.json"
    data = tmp_path / "generations.parquet"
    mem, runtime = model_mem_mb(8000), model_runtime(60, min_per_model_gb_input_mb=1.0)
    # Nothing there yet (a dry run): the config's floor.
    assert mem(None, input=[str(manifest), str(data)]) == 8000
    assert runtime(None, input=[str(manifest), str(data)]) == 60
    manifest.parent.mkdir(parents=True)
    with open(manifest.parent / "model.safetensors", "wb") as weights:
        weights.truncate(5_000_000_000)  # sparse: 5,000 MB
    manifest.write_text("{}")
    with open(data, "wb") as table:
        table.truncate(100_000_000)  # 100 MB
    inputs = [str(manifest), str(data)]
    assert mem(None, input=inputs) == 1000 + 2 * 5000 + 10 * 100
    assert mem(None, input=inputs, attempt=2) == 2 * (1000 + 2 * 5000 + 10 * 100)
    assert model_mem_mb(64000)(None, input=inputs) == 64000
    assert runtime(None, input=inputs) == int(5.0 * 100)
