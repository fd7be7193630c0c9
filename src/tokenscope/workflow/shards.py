"""Generation and teacher forcing in shards: a prompt set split into contiguous runs of prompts,
one generate_shard job and one teacher_force job each.

Shard i of a prompt set holds its prompts [i x shard_size, (i + 1) x shard_size) in file order
(`generation.shard_size`; every sample of a prompt is in its prompt's shard) and is named by its
index, five digits (`00000`): names never contain prompt ids, so no prompt id can clash with a
shard's path. Rules generate_shard and teacher_force write a shard's TABLES (paths.SHARD_TABLE)
and rules gather_generation, gather_tokens and gather_reference stream a set's shards into the
per-set tables every other rule reads (tokenscope.io.gather_parquet; the generations table graded
on the way, see tokenscope.outcomes.answers).

A shard's params carry its prompt range and the sha256 of its raw prompt lines, and its rule reads
the prompt file as `ancient`, so a shard reruns when its own prompts change (Snakemake's params
trigger), not when prompts are appended after it. Planning reads each prompt file once (a derived
set shares its source's file) and parses no JSON: the lines are load_prompt_set's own
(tokenscope.inputs.prompts.prompt_lines), which planning has already checked, unique ids included.
Torch- and pyarrow-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenscope.errors import ConfigError, PromptSetError
from tokenscope.inputs.prompts import prompt_lines
from tokenscope.workflow.paths import SHARD_TABLE

SHARD_DIGITS = 5
SHARD_PATTERN = f"[0-9]{{{SHARD_DIGITS}}}"  # the `shard` wildcard: 00000 ... 99999
MAX_SHARDS = 10**SHARD_DIGITS
TABLES = (
    "generations",
    "tokens",
    "reference",
)  # a shard's tables: its own generations, their tokens, its reference answers


@dataclass(frozen=True)
class Shard:
    """Prompts [start, stop) of a prompt set; `sha256` of their raw lines, each ended by a newline."""

    index: int
    start: int
    stop: int
    sha256: str

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def params(self) -> dict[str, Any]:
        """What a shard job's params (generate_shard, teacher_force) carry of its shard: everything
        of the shard that changes its results."""
        return {"start": self.start, "stop": self.stop, "sha256": self.sha256}


def shard_name(index: int) -> str:
    return f"{index:0{SHARD_DIGITS}d}"


def shard_file(prompt_set: str, model: str, shard: str, table: str) -> str:
    """A shard's `generations`, `tokens` or `reference` table (TABLES)."""
    return SHARD_TABLE.format(prompt_set=prompt_set, model=model, shard=shard, table=table)


def split_lines(lines: Sequence[bytes], shard_size: int) -> list[Shard]:
    """Contiguous shards of at most `shard_size` of `lines` (a prompt set's raw prompt lines)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = []
    for index, start in enumerate(range(0, len(lines), shard_size)):
        stop = min(start + shard_size, len(lines))
        digest = hashlib.sha256()
        for line in lines[start:stop]:
            digest.update(line)
            digest.update(b"\n")
        shards.append(Shard(index, start, stop, digest.hexdigest()))
    return shards


def file_shards(path: str | Path, shard_size: int, prompt_set: str = "") -> list[Shard]:
    """The shards of a prompt set file; more than MAX_SHARDS is a ConfigError naming the key."""
    lines = [raw for _, raw, _ in prompt_lines(path)]
    shards = split_lines(lines, shard_size)
    if len(shards) > MAX_SHARDS:
        named = f"prompt set {prompt_set!r} ({path})" if prompt_set else str(path)
        raise ConfigError(
            f"generation.shard_size: {shard_size} splits the {len(lines)} prompts of {named} into "
            f"{len(shards)} shards, more than the {MAX_SHARDS} that {SHARD_DIGITS}-digit shard names allow; "
            "raise generation.shard_size"
        )
    return shards


def check_shard(path: str | Path, shard: Mapping[str, Any]) -> None:
    """Job time: the file's prompts [start, stop) are still those `shard` (Shard.params()) was planned on."""
    start, stop = shard["start"], shard["stop"]
    lines = [raw for _, raw, _ in prompt_lines(path)][start:stop]
    found = split_lines(lines, max(len(lines), 1))
    if len(lines) != stop - start or found[0].sha256 != shard["sha256"]:
        raise PromptSetError(
            f"{path}: prompts {start + 1} to {stop} changed after the workflow was planned; run the workflow again"
        )


class ShardPlan:
    """The shards of every prompt set, planned at DAG time: each file read once (derived sets share it)."""

    def __init__(self, prompt_files: Mapping[str, str], shard_size: int) -> None:
        self.shard_size = shard_size
        self.prompt_files = dict(prompt_files)
        by_file: dict[str, list[Shard]] = {}
        self.shards: dict[str, list[Shard]] = {}
        self._by_name: dict[str, dict[str, Shard]] = {}
        for prompt_set, path in prompt_files.items():
            if path not in by_file:
                by_file[path] = file_shards(path, shard_size, prompt_set)
            self.shards[prompt_set] = by_file[path]
            self._by_name[prompt_set] = {shard.name: shard for shard in by_file[path]}

    def shard(self, prompt_set: str, name: str) -> Shard:
        """A shard by name; a name past the set's last shard (a target asked for by path) is a ConfigError."""
        shards = self._by_name[prompt_set]
        if name not in shards:
            raise ConfigError(
                f"prompt set {prompt_set!r} ({self.prompt_files[prompt_set]}) has shards 00000 to "
                f"{shard_name(len(shards) - 1)}, not {name} (generation.shard_size: {self.shard_size})"
            )
        return shards[name]

    def files(self, prompt_set: str, model: str, table: str) -> list[str]:
        """The `table` files of every shard of (prompt_set, model), in shard order."""
        return [shard_file(prompt_set, model, shard.name, table) for shard in self.shards[prompt_set]]


def plan_shards(prompt_sets: Mapping[str, Any], generation: Mapping[str, Any]) -> ShardPlan:
    """The ShardPlan of a Plan's `prompt_sets` (name -> facts with `.file`) and config `generation`."""
    return ShardPlan({name: facts.file for name, facts in prompt_sets.items()}, int(generation["shard_size"]))
