"""Fixtures of the `gpu` tests (`pytest -m gpu`): the core agreement tests and the host-sync check
on CUDA (device: helpers.devices.DEVICE). Each module is marked `gpu` and skips without CUDA;
`make test` and CI deselect them (`-m "not gpu"`)."""

from __future__ import annotations

import pytest

from tokenscope.model.loading import LoadOptions, load_prepared

from helpers.devices import DEVICE


@pytest.fixture(scope="session")
def device_loaded(tiny_prepared):
    """(arch, dtype) -> (model, tokenizer) of the tiny random model on DEVICE."""
    cache: dict[tuple[str, str], tuple] = {}

    def load(arch: str = "llama", dtype: str = "float32"):
        if (arch, dtype) not in cache:
            cache[(arch, dtype)] = load_prepared(tiny_prepared(arch), LoadOptions(device=DEVICE, dtype=dtype))
        return cache[(arch, dtype)]

    return load
