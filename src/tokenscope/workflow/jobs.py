"""Job-time helpers for rule scripts: logging, threads, loading the rule's model, one-line user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
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


def run_script(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run a rule script's main with stderr going to the rule's log and user errors on one line."""
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
        message = f"tokenscope error in rule {snakemake.rule}: {error}"
        print(message, file=stream)
        print(message, file=sys.__stderr__)
        sys.exit(1)
