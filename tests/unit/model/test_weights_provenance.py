"""Checkpoint provenance: the weights' sha256 of a prepared model (model.sources.hash_weights) is the
same for byte-identical weights in any folder, sharding or file format, and two models sharing it
(a mislabelled checkpoint) are named in the run record, on the report's front page and in every
comparison table, instead of their zero differences passing for a finding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from tokenscope.analysis.comparison import (
    StatsOptions,
    compare_group,
    identical_weights_note,
    write_comparison_tables,
)
from tokenscope.analysis.stats import BootstrapOptions, TokenChangeOptions
from tokenscope.model.sources import ModelSpec, hash_weights, identical_weight_groups, prepare_model, sha256_file
from tokenscope.report.run_record import build_run_record

from helpers.paths import REPO
from helpers.prompts import make_prompts
from helpers.tiny_models import save_tiny_checkpoint


def prepared(root: Path, name: str, checkpoint: Path) -> dict:
    return prepare_model(ModelSpec(name, "path", str(checkpoint)), root / "prepared" / name)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """base; `copy`: base's checkpoint folder under another name, re-saved in three shards;
    `other`: a model of another seed. Returns (root, manifests)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("provenance")
    base = save_tiny_checkpoint(root / "ckpt-base", "llama", seed=0)
    copy = root / "ckpt-renamed"
    shutil.copytree(base, copy)
    (copy / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(copy, max_shard_size="60KB")
    other = save_tiny_checkpoint(root / "ckpt-other", "llama", seed=1)
    manifests = {
        name: prepared(root, name, folder) for name, folder in (("base", base), ("copy", copy), ("other", other))
    }
    return root, manifests


def test_the_weights_hash_ignores_folder_sharding_and_order(series, tmp_path):
    from safetensors.torch import save_file

    _, manifests = series
    assert len(manifests["copy"]["weights"]) >= 3  # really sharded: other files, other file hashes
    assert set(manifests["copy"]["weights"].values()).isdisjoint(manifests["base"]["weights"].values())
    assert manifests["copy"]["weights_sha256"] == manifests["base"]["weights_sha256"]
    assert manifests["other"]["weights_sha256"] != manifests["base"]["weights_sha256"]
    # The file hashes come from the same pass and equal a plain sha256 of each file.
    folder = Path(series[0]) / "prepared" / "copy"
    assert manifests["copy"]["weights"] == {name: sha256_file(folder / name) for name in manifests["copy"]["weights"]}
    # Tensor order in the file, metadata and chunk boundaries do not matter; a changed byte does.
    tensors = {"b": torch.randn(50, 7), "a": torch.arange(10), "empty": torch.zeros(0), "h": torch.ones(3).bfloat16()}
    save_file(tensors, tmp_path / "one.safetensors", metadata={"format": "pt"})
    save_file(dict(reversed(tensors.items())), tmp_path / "two.safetensors", metadata={"saved_by": "someone else"})
    hashes = {
        hash_weights([tmp_path / f"{n}.safetensors"], block=block)[1]
        for n in ("one", "two")
        for block in (1, 7, 1 << 20)
    }
    assert len(hashes) == 1
    tensors["b"][3, 2] += 1
    save_file(tensors, tmp_path / "three.safetensors")
    assert hash_weights([tmp_path / "three.safetensors"])[1] not in hashes
    # The same values in another dtype are other weights.
    save_file({**tensors, "h": tensors["h"].float()}, tmp_path / "four.safetensors")
    assert hash_weights([tmp_path / "four.safetensors"])[1] != hash_weights([tmp_path / "three.safetensors"])[1]


def test_pickled_weights_converted_hash_like_safetensors(series, tmp_path):
    from transformers import AutoModelForCausalLM

    root, manifests = series
    checkpoint = shutil.copytree(root / "ckpt-base", tmp_path / "pickled")
    torch.save(AutoModelForCausalLM.from_pretrained(checkpoint).state_dict(), checkpoint / "pytorch_model.bin")
    (checkpoint / "model.safetensors").unlink()
    converted = prepare_model(ModelSpec("pickled", "path", str(checkpoint), allow_pickle=True), tmp_path / "prepared")
    assert converted["weights_sha256"] == manifests["base"]["weights_sha256"]


def test_identical_groups_also_from_manifests_without_the_weights_hash(series):
    _, manifests = series
    assert identical_weight_groups(manifests) == [["base", "copy"]]
    assert identical_weight_groups({n: manifests[n] for n in ("base", "other")}) == []
    # Manifests written before weights_sha256 existed: the same weight files make the same weights.
    old = {name: {k: v for k, v in m.items() if k != "weights_sha256"} for name, m in manifests.items()}
    old["again"] = dict(old["other"], model="again")
    assert identical_weight_groups(old) == [["other", "again"]]


def render_front_page(record: dict) -> str:
    """report/workflow.rst rendered as Snakemake's report renders it (jinja2, then docutils to HTML)."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        config = {"_run_record": record, "prompt_sets": {"smoke": "config/prompts/smoke.jsonl"}}

    text = (REPO / "report" / "workflow.rst").read_text()
    rst = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(snakemake=Snakemake)
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["html_body"]


def test_run_record_and_front_page_name_identical_weights(series):
    root, manifests = series
    paths = [root / "prepared" / name / "manifest.json" for name in manifests]
    record = build_run_record(paths, ["my.yaml"], {"device": "cpu", "dtype": "float32"})
    assert record["identical_weights"] == [["base", "copy"]]
    assert [m["weights_sha256"] for m in record["models"]] == [m["weights_sha256"] for m in manifests.values()]
    page = render_front_page(record)
    warning = page.index("Identical weights")
    assert "<strong>base</strong>, <strong>copy</strong>" in page[warning : page.index("Models</strong>")]
    assert "not a finding" in page and manifests["base"]["weights_sha256"] in page
    distinct = build_run_record([paths[0], paths[2]], ["my.yaml"], {"device": "cpu", "dtype": "float32"})
    assert distinct["identical_weights"] == []
    assert "Identical weights" not in render_front_page(distinct)


def test_comparison_flags_identical_weights(series, tmp_path):
    from tokenscope.generation.options import GenerationOptions
    from tokenscope.generation.run import run_generation
    from tokenscope.inputs.sequences import generation_table_sequences
    from tokenscope.model.loading import LoadOptions, load_model
    from tokenscope.scoring.cross_scoring import score_pair
    from tokenscope.scoring.options import ScoringOptions

    root, manifests = series
    models = list(manifests)
    loaded = {name: load_model(root / "prepared" / name, LoadOptions(device="cpu", dtype="float32")) for name in models}
    own, pairs = [], []
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 12}
    for name, (model, tokenizer) in loaded.items():
        generations, tokens = run_generation(
            model, tokenizer, make_prompts(6), model_name=name, prompt_set="t",
            options=GenerationOptions(n_samples=2, sampling=sampling), show_progress=False,
        )  # fmt: skip
        own.append(tokens.to_pandas())
        if name == "base":
            columns = ["prompt_id", "sample", "prompt_token_ids", "token_ids"]
            sequences = generation_table_sequences(generations.select(columns).to_pandas())
    for name in models[1:]:
        table = score_pair(
            *loaded["base"], *loaded[name], sequences, model_a_name="base", model_b_name=name, source="base",
            prompt_set="t", options=ScoringOptions(n_alternatives=0), show_progress=False,
        )  # fmt: skip
        pairs.append(table.to_pandas())
    options = StatsOptions(
        boot=BootstrapOptions(n_boot=50), n_perm=50, changes=TokenChangeOptions(min_count=1, top_n=3)
    )
    own_frame, pair_frame = pd.concat(own, ignore_index=True), pd.concat(pairs, ignore_index=True)
    tables = compare_group(own_frame, pair_frame, models, options, manifests=manifests)
    tests = tables["paired_tests"].set_index(["tokens", "model"])
    # The renamed copy generates the same tokens and scores them the same: a zero difference...
    assert tests.loc[("own generations", "copy"), "mean_diff"] == 0
    assert (pair_frame[pair_frame["model_b"] == "copy"]["kl_a_b"] == 0).all()
    # ...that every table flags as identical weights, naming the twin; the other model is not flagged.
    expected = {
        "base": {"identical_weights": True, "identical_to": "copy"},
        "copy": {"identical_weights": True, "identical_to": "base"},
        "other": {"identical_weights": False, "identical_to": ""},
    }
    for name in ("summary", "paired_tests", "trends"):
        flags = tables[name].groupby("model")[["identical_weights", "identical_to"]].agg(set)
        shown = {model: {k: v.pop() for k, v in row.items() if len(v) == 1} for model, row in flags.iterrows()}
        # paired_tests has a row per checkpoint against the base, the others a row per model too
        assert shown == {m: expected[m] for m in (models[1:] if name == "paired_tests" else models)}, name
    assert tables["changed_copy_by_token"]["identical_weights"].all()
    assert not tables["changed_other_by_token"]["identical_weights"].any()
    note = identical_weights_note(models, manifests)
    assert note is not None and "base = copy" in note and "not a finding" in note
    write_comparison_tables(tables, tmp_path / "tables", note)
    markdown = (tmp_path / "tables" / "paired_tests.md").read_text()
    assert markdown.startswith("## paired tests\n\n**Note**: Identical weights: base = copy")
    assert "| tokens" in markdown
    csv = pd.read_csv(tmp_path / "tables" / "paired_tests.csv", keep_default_na=False)
    assert csv.set_index("model").loc["copy", "identical_to"].tolist() == ["base", "base"]
    # Without twins: no flag, no note.
    distinct = {name: manifests[name] for name in ("base", "other")}
    assert identical_weights_note(["base", "other"], distinct) is None
    plain = compare_group(own_frame[own_frame["model"] != "copy"], pair_frame[pair_frame["model_b"] == "other"],
                          ["base", "other"], options, manifests=distinct)  # fmt: skip
    assert not plain["paired_tests"]["identical_weights"].any()
