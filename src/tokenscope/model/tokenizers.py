"""Tokenizer identity: a fingerprint per tokenizer and the one check that compared models share one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenscope.errors import TokenizerMismatchError

if TYPE_CHECKING:
    from tokenscope.model.types import Tokenizer


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the vocabulary and special tokens: equal fingerprints tokenize alike."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())
    return hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()


def require_same_tokenizer(fingerprints: Mapping[str, str]) -> str:
    """Raise naming the first two models (in order) whose fingerprints differ; else the shared one."""
    models = list(fingerprints)
    first = models[0]
    for other in models[1:]:
        if fingerprints[other] != fingerprints[first]:
            raise TokenizerMismatchError(
                f"models {first!r} and {other!r} have different tokenizers; "
                "token-by-token comparison needs one tokenizer"
            )
    return fingerprints[first]


def check_manifest_tokenizers(manifest_paths: Sequence[str | Path]) -> dict[str, Any]:
    """The same-tokenizer check on prepared models' manifests; returns a summary for the group."""
    manifests = [json.loads(Path(p).read_text()) for p in manifest_paths]
    shared = require_same_tokenizer({m["model"]: m["tokenizer_sha256"] for m in manifests})
    return {"tokenizer_sha256": shared, "models": [m["model"] for m in manifests]}
