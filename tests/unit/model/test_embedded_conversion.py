"""The embedded GGUF model is prepared as an ordinary fp32 safetensors checkpoint: its config.json
carries no `quantization_config` (other tools would refuse or re-quantize it), and a cached
conversion made before that fix (or a broken one) is converted again."""

from __future__ import annotations

import json

import torch

from tokenscope.model import sources
from tokenscope.model.sources import ModelSpec, prepare_model

from helpers.tiny_models import save_tiny_checkpoint


def test_prepared_embedded_model_is_plain_safetensors(embedded_prepared):
    from transformers import AutoModelForCausalLM

    config = json.loads((embedded_prepared / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(embedded_prepared)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32


def _fake_gguf(tmp_path, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(sources, "embedded_gguf_path", lambda name: gguf)
    converted = []

    def convert(path, out_dir):
        converted.append(out_dir)
        save_tiny_checkpoint(out_dir)

    monkeypatch.setattr(sources, "convert_gguf", convert)
    return converted


def _cached_folder(cache):
    (folder,) = (cache / "embedded").iterdir()
    return folder


def test_stale_cached_conversion_is_redone(tmp_path, monkeypatch):
    converted = _fake_gguf(tmp_path, monkeypatch)
    spec = ModelSpec("m", "embedded", "SmolLM2-135M-Instruct")
    cache = tmp_path / "cache"
    prepare_model(spec, tmp_path / "first", cache_dir=cache)
    assert len(converted) == 1
    prepare_model(spec, tmp_path / "again", cache_dir=cache)
    assert len(converted) == 1  # a current conversion is reused

    # A conversion cached before the fix still declares the GGUF quantization.
    folder = _cached_folder(cache)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "fake.gguf", "dequantize": False}
    (folder / "config.json").write_text(json.dumps(config))
    prepare_model(spec, tmp_path / "stale", cache_dir=cache)
    assert len(converted) == 2
    assert "quantization_config" not in json.loads((tmp_path / "stale" / "config.json").read_text())

    # A cached conversion whose weights were cut short is converted again too.
    weights = _cached_folder(cache) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    prepare_model(spec, tmp_path / "broken", cache_dir=cache)
    assert len(converted) == 3
