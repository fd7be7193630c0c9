"""Whether the model jobs ask the scheduler for a GPU, decided without importing torch.

Snakemake evaluates the rules' resources when it parses the workflow (DAG time), which happens
on every dry run, every `--lint` and, on a cluster, on the login node. Importing torch there
costs seconds and a CUDA stack that node may not have, so DAG time stays torch-free: the device
is read from the config, and for `runtime.device: auto` the node that parses the workflow
decides by looking for an NVIDIA GPU the way the driver exposes it. On a cluster that is the
login node, which usually has none; docs/cluster.md says to set `device: cuda` there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees
NVIDIA_DEVICE = Path("/dev/nvidia0")


def nvidia_gpu_visible(
    environ: Mapping[str, str] | None = None,
    nvidia_gpus: Path = NVIDIA_GPUS,
    nvidia_device: Path = NVIDIA_DEVICE,
) -> bool:
    """An NVIDIA GPU is present and CUDA_VISIBLE_DEVICES does not hide every device.

    CUDA_VISIBLE_DEVICES="" or "-1" (any invalid first entry stops CUDA's list) hides them all.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        first = visible.split(",")[0].strip()
        if not first or first.startswith("-"):
            return False
    try:
        if nvidia_gpus.is_dir() and any(nvidia_gpus.iterdir()):
            return True
    except OSError:
        pass
    return nvidia_device.exists()


def gpu_count(
    device: str,
    environ: Mapping[str, str] | None = None,
    nvidia_gpus: Path = NVIDIA_GPUS,
    nvidia_device: Path = NVIDIA_DEVICE,
) -> int:
    """The `gpu` resource of a model job: 1 for a cuda device, 0 for cpu or mps.

    `auto` gives 1 when this node sees an NVIDIA GPU (the module docstring says why this does
    not ask torch); the paths say where the driver is looked for.
    """
    if device.startswith("cuda"):
        return 1
    if device != "auto":
        return 0
    return int(nvidia_gpu_visible(environ, nvidia_gpus, nvidia_device))
