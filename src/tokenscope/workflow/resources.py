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
