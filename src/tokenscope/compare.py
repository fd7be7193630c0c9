"""Checks and helpers for comparing models token by token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class TokenizerMismatchError(ValueError):
    """Models compared token by token have different tokenizers."""


def check_same_tokenizer(manifest_paths: Sequence[str | Path]) -> dict[str, Any]:
    """Raise naming both models if two prepared models' tokenizers differ; else a summary."""
    manifests = [json.loads(Path(p).read_text()) for p in manifest_paths]
    first = manifests[0]
    for other in manifests[1:]:
        if other["tokenizer_sha256"] != first["tokenizer_sha256"]:
            raise TokenizerMismatchError(
                f"models {first['model']!r} and {other['model']!r} have different tokenizers; "
                "token-by-token comparison needs one tokenizer"
            )
    return {"tokenizer_sha256": first["tokenizer_sha256"], "models": [m["model"] for m in manifests]}
