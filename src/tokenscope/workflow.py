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


def load_rule_model(snakemake: Any) -> tuple[Any, Any]:
    """The model of a rule whose input `manifest` is a prepared model, on params.runtime's device."""
    from pathlib import Path

    from tokenscope.models import LoadOptions
    from tokenscope.pipeline import load_checked

    runtime = snakemake.params.runtime
    options = LoadOptions(device=runtime["device"], dtype=runtime["dtype"])
    return load_checked(Path(snakemake.input.manifest).parent, options)


def run_script(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run a rule script's main with stderr going to the rule's log and user errors on one line."""
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
