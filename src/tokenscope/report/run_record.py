"""The run record: what a report's front page names (config files, models, package versions).

Written by the workflow's `run_record` job, in the environment the jobs run in (a conda env under
`--use-conda`), so its versions are those that computed the results, not those of the shell that
built the report.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from tokenscope import __version__
from tokenscope.inputs.chat import prepared_chat_template
from tokenscope.model.sources import identical_weight_groups

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "safetensors",
    "gguf",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "matplotlib",
    "seaborn",
    "snakemake",
)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each package, tokenscope's own first; 'not installed' where absent."""
    versions = {"tokenscope": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_entry(manifest: dict[str, Any], model_dir: str | Path | None = None) -> dict[str, Any]:
    """The identity of a prepared model, from its manifest; with its folder `model_dir`, also
    whether its tokenizer has a chat template (`chat_template`; without one, chats are the
    messages' contents joined by blank lines)."""
    entry = {
        "name": manifest["model"],
        "source": manifest["source"],
        "source_text": describe_source(manifest["source"]),
        "resolved_revision": manifest.get("resolved_revision"),
        "weights": manifest["weights"],
        "weights_sha256": manifest.get("weights_sha256"),
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "trust_remote_code": manifest.get("trust_remote_code", False),
    }
    if model_dir is not None:
        entry["chat_template"] = prepared_chat_template(model_dir)
    return entry


def describe_source(source: dict[str, Any]) -> str:
    """A model source as one line: 'hub Qwen/Qwen2.5-1.5B-Instruct', 'path /data/ckpt', …"""
    text = f"{source.get('kind', '?')} {source.get('location', '')}".strip()
    return f"{text} @ {source['revision']}" if source.get("revision") else text


def build_run_record(
    manifest_paths: Sequence[str | Path], config_files: Sequence[str | Path], runtime: dict[str, Any]
) -> dict[str, Any]:
    """The record: `runtime` is the config's model-loading settings (device, dtype, device_map).

    `identical_weights` lists the groups of models whose weights are byte-identical (the same
    `weights_sha256`, or for older manifests the same weight files): a checkpoint saved under two
    names, or a mislabelled one, whose comparisons show zero differences by construction.
    """
    manifests = {}
    for path in manifest_paths:
        manifest = json.loads(Path(path).read_text())
        manifests[manifest["model"]] = (manifest, Path(path).parent)
    return {
        "config_files": [str(path) for path in config_files],
        "models": [model_entry(manifest, folder) for manifest, folder in manifests.values()],
        "identical_weights": identical_weight_groups({name: entry[0] for name, entry in manifests.items()}),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "runtime": dict(runtime),
    }
