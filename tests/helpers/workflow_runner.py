"""Running the workflow from tests: a populated working directory and parsed dry runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import REPO, TEST_CONFIGS, TEST_DATA


def snakemake(
    workdir: Path, config: str, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake on the repo's Snakefile in `workdir` with a test config from tests/configs (an
    absolute path replaces tests/configs/); `env` adds environment variables."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(TEST_CONFIGS / config),
        "--show-failed-logs",
        *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


def snakemake_in_repo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake as the README says, from the repository root with no -s or -d: the Snakefile,
    the workflow profile profiles/default and relative paths such as config/config.yaml are the
    clone's own. Dry runs only (they write nothing but .snakemake/ there)."""
    assert "--dry-run" in args or "-n" in args, "a run from the repository root must be a dry run"
    command = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(workdir: Path, config: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run plans."""
    return parse_jobs(snakemake(workdir, config, "--dry-run").stdout)


def parse_jobs(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a dry run's output."""
    return [(job.rule, job.wildcards) for job in parse_planned_jobs(out)]


@dataclass(frozen=True)
class PlannedJob:
    """A job of a dry run: its rule, wildcards and the files it reads (`input`) and writes (`output`)."""

    rule: str
    wildcards: dict[str, str]
    input: list[str]
    output: list[str]


def parse_planned_jobs(out: str) -> list[PlannedJob]:
    """Every job in a dry run's output, with its input and output files."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        match = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not match:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        wildcards = dict(kv.split("=", 1) for kv in fields["wildcards"].split(", ")) if "wildcards" in fields else {}
        files = {key: fields[key].split(", ") if key in fields else [] for key in ("input", "output")}
        jobs.append(PlannedJob(match.group(1), wildcards, files["input"], files["output"]))
    return jobs


def template_regex(template: str, known: dict[str, str] | None = None) -> re.Pattern[str]:
    """A path template of tokenscope.workflow.paths as a regex: the wildcards in `known` stand for
    their values, every other one for a path segment."""
    known = known or {}
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else re.escape(known[part]) if part in known else "[^/]+"
        for i, part in enumerate(parts)
    )
    return re.compile(pattern)


def copy_prompts(workdir: Path, *names: str, source: Path = TEST_DATA) -> None:
    """Copy prompt sets (from tests/data unless `source` says otherwise) into `workdir`/prompts."""
    (workdir / "prompts").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, workdir / "prompts" / name)
