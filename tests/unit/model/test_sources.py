"""Model sources resolve once into prepared folders with a manifest; unsafe inputs are opt-in."""

from __future__ import annotations

import json

import pytest
import torch

from tokenscope.errors import ModelError
from tokenscope.model.loading import LoadOptions, load_prepared
from tokenscope.model.sources import ModelSpec, prepare_model, sha256_file

from helpers.tiny_models import save_tiny_checkpoint


def test_local_checkpoint_manifest(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    manifest = prepare_model(ModelSpec("m", "path", str(checkpoint)), tmp_path / "prepared")
    on_disk = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["weights"] == {"model.safetensors": sha256_file(checkpoint / "model.safetensors")}
    assert manifest["source"] == {"kind": "path", "location": str(checkpoint)}
    model, tokenizer = load_prepared(tmp_path / "prepared", LoadOptions(device="cpu"))
    assert model.dtype == torch.float32 and tokenizer.pad_token_id is not None


def test_pickled_weights_need_opt_in(tmp_path):
    from transformers import AutoModelForCausalLM

    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt")
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    (checkpoint / "model.safetensors").unlink()
    torch.save(model.state_dict(), checkpoint / "pytorch_model.bin")
    with pytest.raises(ModelError, match="set allow_pickle: true"):
        prepare_model(ModelSpec("m", "path", str(checkpoint)), tmp_path / "refused")
    prepare_model(ModelSpec("m", "path", str(checkpoint), allow_pickle=True), tmp_path / "prepared")
    assert (tmp_path / "prepared" / "model.safetensors").exists()  # converted once, safetensors downstream
    reloaded, _ = load_prepared(tmp_path / "prepared", LoadOptions(device="cpu"))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_unreachable_hub_model_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"models.base: cannot download 'no-such-org/no-such-model'@main"):
        prepare_model(ModelSpec("base", "hub", "no-such-org/no-such-model", revision="main"), tmp_path / "p")


def test_unprepared_folder_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not a prepared model folder"):
        load_prepared(tmp_path)


def test_source_needs_exactly_one_kind():
    with pytest.raises(ModelError, match="models.x: give exactly one of"):
        ModelSpec.from_config("x", {"hub": "a/b", "path": "/c"})
