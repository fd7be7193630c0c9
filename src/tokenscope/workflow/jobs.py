"""Job-time helpers for rule scripts: logging, threads, loading the rule's model, one-line user errors."""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from tokenscope.errors import TokenscopeError


def runtime_load_options(runtime: dict[str, Any]) -> Any:
    """LoadOptions from the config's runtime section."""
    from tokenscope.model.loading import LoadOptions

    return LoadOptions(device=runtime["device"], dtype=runtime["dtype"], device_map=runtime.get("device_map"))


def load_rule_model(snakemake: Any) -> tuple[Any, Any]:
    """The model of a rule whose input `manifest` is a prepared model, on params.runtime's device."""
    from pathlib import Path

    from tokenscope.model.loading import load_model

    runtime = snakemake.params.runtime
    options = runtime_load_options(runtime)
    return load_model(Path(snakemake.input.manifest).parent, options)


def return_freed_memory() -> None:
    """Have glibc serve large allocations with mmap, so freed chunk tensors go back to the OS.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed; the
    chunk-sized logits tensors of scoring and the logit lens then come from the heap, where
    freed blocks fragment across threads' arenas and the process grows with every chunk
    (measured: logit lens of 512 tokens, 128-row chunks, peak RSS 4.9 GB; 1.1 GB with a fixed
    threshold). Fixing the threshold at 4 MiB stops that. A no-op where libc is not glibc.
    """
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_mmap_threshold, 4 << 20)
    except (OSError, AttributeError):
        pass


# A full disk or quota, by errno or by strerror text: a plain write() and pyarrow raise OSError with
# the errno but no file name; safetensors raises its own error type with the text only.
_DISK_FULL = {errno.ENOSPC: "no space left on device", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}
# tokenscope.io's atomic writers write `.{name}.XXXXXXXX.tmp` beside the target and rename it.
_ATOMIC_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_full_message(error: BaseException, outputs: list[str]) -> str | None:
    """The one-line reason for a full disk or quota: `no space left on device writing <path>` (or
    `disk quota exceeded writing <path>`) when `error` or an exception it was raised from is ENOSPC
    or EDQUOT, else None. The path is the one the exception names (the final name for an atomic
    writer's temporary file), else the job's outputs."""
    reason = None
    path = None
    for link in _chain(error):
        code = getattr(link, "errno", None) if isinstance(link, OSError) else None
        text = str(link).lower()
        found = _DISK_FULL.get(code) if code is not None else None
        found = found or next((known for known in _DISK_FULL.values() if known in text), None)
        if found is None:
            continue
        reason = reason or found
        filename = getattr(link, "filename", None) if isinstance(link, OSError) else None
        if filename is not None:
            path = os.fsdecode(filename) if isinstance(filename, str | bytes) else str(filename)
            break
    if reason is None:
        return None
    if path is not None:
        folder, name = os.path.split(path)
        tmp = _ATOMIC_TMP.match(name)
        if tmp:
            path = os.path.join(folder, tmp.group("name"))
    else:
        path = ", ".join(outputs) if outputs else "(the job's outputs)"
    return f"{reason} writing {path}"


def _report(stream: Any, message: str) -> None:
    """Print the one-line error to the rule's log and to the terminal (the log's disk may be full)."""
    for target in dict.fromkeys((stream, sys.__stderr__)):
        if target is None:
            continue
        try:
            print(message, file=target)
        except (OSError, ValueError):
            pass


def run_script(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run a rule script's main with stderr going to the rule's log and user errors on one line:
    a TokenscopeError, and a full disk or quota (naming the file being written)."""
    return_freed_memory()
    log_path = snakemake.log[0] if snakemake.log else None
    stream = open(log_path, "w", buffering=1) if log_path else sys.stderr
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
    except ImportError:
        pass
    try:
        main(snakemake)
    except TokenscopeError as error:
        _report(stream, f"tokenscope error in rule {snakemake.rule}: {error}")
        sys.exit(1)
    except Exception as error:
        disk_full = disk_full_message(error, [str(path) for path in snakemake.output])
        if disk_full is None:
            raise
        _report(stream, f"tokenscope error in rule {snakemake.rule}: {disk_full}")
        sys.exit(1)
