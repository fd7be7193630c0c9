"""Resources of the workflow's jobs computed from the size of their inputs (Snakemake callables).

A job on 10^7 token rows needs more memory and time than one on the demo's 10^4, and a cluster
job gets what it asks for: each callable here takes the job's `input` (and `attempt`, so a job
retried after running out of memory asks for more) and returns mem_mb or runtime (minutes).
Inputs that do not exist yet (a dry run) count as empty, so planning never touches the disk
beyond a stat. Torch-free: rules/*.smk imports it at DAG time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Resource = Callable[..., int]


def input_size_mb(files: Iterable[Any]) -> float:
    """Total size in MB of the existing files (folders: their files) among `files`."""
    total = 0
    for name in files:
        path = Path(str(name))
        try:
            if path.is_dir():
                total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            else:
                total += os.stat(path).st_size
        except OSError:  # not there yet: a dry run, or a file another job writes
            continue
    return total / 1e6


def scaled_mem_mb(base_mb: int, per_input_mb: float, max_mb: int | None = None) -> Resource:
    """mem_mb = (base_mb + per_input_mb x input MB) x attempt, at most max_mb (before the attempt factor)."""

    def mem_mb(wildcards: Any, input: Any, attempt: int = 1) -> int:
        need = base_mb + per_input_mb * input_size_mb(input)
        if max_mb is not None:
            need = min(need, max_mb)
        return int(need) * max(int(attempt), 1)

    return mem_mb


def scaled_runtime(base_min: int, per_input_gb_min: float) -> Resource:
    """runtime (minutes) = (base_min + per_input_gb_min x input GB) x attempt."""

    def runtime(wildcards: Any, input: Any, attempt: int = 1) -> int:
        return int(base_min + per_input_gb_min * input_size_mb(input) / 1000) * max(int(attempt), 1)

    return runtime


# Model jobs: the models they load (a prepared model's folder, named by its manifest.json input)
# plus the data they read, never less than the config's runtime.mem_mb / runtime.runtime_min.
MANIFEST = "manifest.json"
_folder_sizes: dict[tuple[str, int, int], float] = {}


def model_folder_mb(manifest: Any) -> float:
    """Size in MB of a prepared model's folder (weights, tokenizer), named by its manifest.json;
    0 while the manifest does not exist. prepare_model writes the manifest last, so a folder is
    measured once per manifest version (cached on its path, mtime and size)."""
    try:
        stat = os.stat(str(manifest))
    except OSError:
        return 0.0
    key = (str(manifest), stat.st_mtime_ns, stat.st_size)
    if key not in _folder_sizes:
        _folder_sizes[key] = input_size_mb([Path(str(manifest)).parent])
    return _folder_sizes[key]


def model_and_data_mb(files: Iterable[Any]) -> tuple[float, float]:
    """(MB of the models behind the manifest.json inputs, MB of every other existing input)."""
    models, data = 0.0, []
    for name in files:
        if Path(str(name)).name == MANIFEST:
            models += model_folder_mb(name)
        else:
            data.append(name)
    return models, input_size_mb(data)


def model_mem_mb(
    floor_mb: int, *, base_mb: int = 1000, per_model_mb: float = 2.0, per_input_mb: float = 10.0
) -> Resource:
    """mem_mb of a model job = max(floor_mb, base_mb + per_model_mb x its models' folder MB +
    per_input_mb x its other inputs' MB) x attempt.

    per_model_mb 2: weights stored in bf16 are loaded in fp32 on a CPU (dtype auto); per_input_mb
    10: a generations table read into memory (token id lists) takes several times its parquet size.
    floor_mb is the config's runtime.mem_mb, so a small job asks for what the config says.
    """

    def mem_mb(wildcards: Any, input: Any, attempt: int = 1) -> int:
        models, data = model_and_data_mb(input)
        need = max(float(floor_mb), base_mb + per_model_mb * models + per_input_mb * data)
        return int(need) * max(int(attempt), 1)

    return mem_mb


def model_runtime(floor_min: int, *, min_per_model_gb_input_mb: float = 0.05) -> Resource:
    """runtime (minutes) of a model job = max(floor_min, min_per_model_gb_input_mb x its models' GB
    x its other inputs' MB) x attempt: the work is (parameters x tokens), the inputs' size stands in
    for the tokens. A rough scale for very large runs; floor_min is the config's runtime.runtime_min."""

    def runtime(wildcards: Any, input: Any, attempt: int = 1) -> int:
        models, data = model_and_data_mb(input)
        need = max(float(floor_min), min_per_model_gb_input_mb * models / 1000 * data)
        return int(need) * max(int(attempt), 1)

    return runtime
