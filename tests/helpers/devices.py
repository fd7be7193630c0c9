"""The device of the `gpu` tests (tests/gpu/): TOKENSCOPE_TEST_DEVICE, default `cuda`.

`TOKENSCOPE_TEST_DEVICE=cpu pytest -m gpu tests/gpu` runs their logic on a machine without a GPU."""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("TOKENSCOPE_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")

# Every module of tests/gpu/ sets `pytestmark = GPU_TEST`: marked `gpu` (deselected by `make test`
# and CI) and skipped where its device is CUDA and there is none.
GPU_TEST = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        ON_CUDA and not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)"
    ),
]
