"""Glue between Snakemake rule scripts and the library: logging, threads, one-line errors."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from tokenscope.compare import TokenizerMismatchError
from tokenscope.models import ModelSourceError
from tokenscope.prompts import PromptSetError


# Errors about the user's input: reported as one line instead of a traceback.
USER_ERRORS = (ModelSourceError, PromptSetError, TokenizerMismatchError, ValueError, FileNotFoundError)


def config_error_message(error: Exception) -> str:
    """One line naming the config key from snakemake.utils.validate's jsonschema error."""
    cause = error.__cause__ or error.__context__
    path = getattr(cause, "absolute_path", None)
    message = getattr(cause, "message", None)
    if message is None:
        text = str(error)
        match = re.search(r"ValidationError: (.*?)(?:\n|$)", text)
        return f"invalid config: {match.group(1) if match else text.splitlines()[0]}"
    key = ".".join(str(p) for p in path) if path else "(top level)"
    if getattr(cause, "validator", None) == "additionalProperties":
        unknown = re.findall(r"'([^']+)' was unexpected", message)
        if unknown:
            prefix = f"{key}." if path else ""
            return f"invalid config: unknown key {', '.join(prefix + u for u in unknown)}"
    return f"invalid config at {key}: {message}"


def runtime_load_options(runtime: dict[str, Any]) -> Any:
    """LoadOptions from the config's runtime section."""
    from tokenscope.models import LoadOptions

    return LoadOptions(device=runtime["device"], dtype=runtime["dtype"], device_map=runtime.get("device_map"))


def load_rule_model(snakemake: Any) -> tuple[Any, Any]:
    """The model of a rule whose input `manifest` is a prepared model, on params.runtime's device."""
    from pathlib import Path

    from tokenscope.pipeline import load_checked

    runtime = snakemake.params.runtime
    options = runtime_load_options(runtime)
    return load_checked(Path(snakemake.input.manifest).parent, options)


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
    except USER_ERRORS as error:
        message = f"tokenscope error in rule {snakemake.rule}: {error}"
        print(message, file=stream)
        print(message, file=sys.__stderr__)
        sys.exit(1)
