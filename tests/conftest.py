"""Shared fixtures: tiny random models built from a config and saved locally (no network), the
embedded model, and a headless browser. What they are built from lives in tests/helpers/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenscope.model.loading import LoadOptions, load_model, load_prepared
from tokenscope.model.sources import ModelSpec, prepare_model

from helpers.browser import headless_chromium
from helpers.tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """arch -> prepared model folder of a tiny random model."""
    cache: dict[str, Path] = {}

    def make(arch: str = "llama") -> Path:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{arch}")
            checkpoint = save_tiny_checkpoint(root / "checkpoint", arch)
            prepare_model(ModelSpec(name=arch, kind="path", location=str(checkpoint)), root / "prepared")
            cache[arch] = root / "prepared"
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def tiny_loaded(tiny_prepared):
    cache: dict[tuple[str, str], tuple] = {}

    def load(arch: str = "llama", dtype: str = "float32"):
        if (arch, dtype) not in cache:
            cache[(arch, dtype)] = load_prepared(tiny_prepared(arch), LoadOptions(device="cpu", dtype=dtype))
        return cache[(arch, dtype)]

    return load


@pytest.fixture(scope="session")
def embedded_prepared(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, prepared (its conversion is cached across runs)."""
    out = tmp_path_factory.mktemp("embedded") / "smollm2"
    prepare_model(ModelSpec(name="smollm2", kind="embedded", location="SmolLM2-135M-Instruct"), out)
    return out


@pytest.fixture(scope="session")
def embedded(embedded_prepared):
    """(model, tokenizer) of the embedded model in float32 on the CPU, loaded with load_model (which
    checks that backbone + unembedding reproduce the model's own logits)."""
    return load_model(embedded_prepared, LoadOptions(device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by selenium; skips (or fails with TOKENSCOPE_REQUIRE_BROWSER=1) where
    absent (tests/helpers/browser.py)."""
    with headless_chromium() as driver:
        yield driver
