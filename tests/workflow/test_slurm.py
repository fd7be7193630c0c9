"""The workflow on a real single-node SLURM cluster with `--workflow-profile profiles/slurm`.

tests/slurm/cluster.py starts munged, slurmctld and slurmd on this machine (Debian's slurm-wlm and
munge packages, installed by .ci/run) and stops them, by pid, when the module's tests are done.
Where SLURM cannot run (not installed, not root, a real cluster's slurm.conf present) the tests
skip and say why; with TOKENSCOPE_REQUIRE_SLURM=1 (set by .ci/run once the packages are in) they
fail instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.paths import REPO
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, planned_jobs, snakemake
from slurm import cluster as slurm_cluster

pytestmark = pytest.mark.slow

PROFILE = REPO / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def _unavailable(reason: str):
    if os.environ.get("TOKENSCOPE_REQUIRE_SLURM") == "1":
        pytest.fail(f"TOKENSCOPE_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')")
    try:
        slurm_cluster.check_available()
    except slurm_cluster.Unavailable as why:
        _unavailable(str(why))
    running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield running
    finally:
        running.stop()


def profile_default_resources(**overrides: str) -> list[str]:
    """profiles/slurm's default-resources with some entries replaced (the CLI flag replaces them all)."""
    resources = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]
    resources.update(overrides)
    return [f"{key}={value}" for key, value in resources.items() if value is not None]


def on_cluster(
    cluster, workdir: Path, config: str, *resources: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with the SLURM workflow profile against the test cluster.

    No slurmdbd here, so job status comes from squeue (sacct would leave the run waiting forever).
    """
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(REPO / "tests" / "configs" / config),
        "--workflow-profile",
        str(PROFILE),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        "--default-resources",
        *resources,
    ]
    env = {**cluster.env, "PYTHONUNBUFFERED": "1"}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=workdir, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        out = "".join(
            x.decode(errors="replace") if isinstance(x, bytes) else x for x in (error.stdout or "", error.stderr or "")
        )
        pytest.fail(f"snakemake on SLURM did not finish in {timeout} s; jobs: {cluster.jobs()}\n{out[-6000:]}")
    result.output = result.stdout + result.stderr
    return result


def populate(workdir: Path) -> Path:
    save_tiny_checkpoint(workdir / "checkpoints" / "base", seed=0)
    copy_prompts(workdir, "tiny_a.jsonl")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """tests/configs/slurm.yaml run as SLURM jobs: (workdir, completed process, planned jobs)."""
    workdir = populate(tmp_path_factory.mktemp("on-slurm"))
    planned = [(rule, wildcards) for rule, wildcards in planned_jobs(workdir, "slurm.yaml") if rule != "all"]
    resources = profile_default_resources(slurm_partition=cluster.partition, slurm_account=cluster.account)
    result = on_cluster(cluster, workdir, "slurm.yaml", *resources)
    assert result.returncode == 0, result.output[-8000:]
    return workdir, result, planned


def test_every_job_ran_as_a_slurm_job(slurm_run, cluster):
    workdir, result, planned = slurm_run
    submitted = SUBMITTED.findall(result.output)
    slurm_ids = [slurm_id for _, slurm_id, _ in submitted]
    assert len(set(slurm_ids)) == len(submitted) == len(planned)
    rules = Counter(re.search(r"/rule_(\w+)/", log).group(1) for _, _, log in submitted)
    assert rules == Counter(rule for rule, _ in planned)
    known = cluster.jobs()
    for _, slurm_id, log in submitted:
        state, comment = known[slurm_id]
        rule = re.search(r"/rule_(\w+)/", log).group(1)
        assert state == "COMPLETED" and comment.startswith(f"rule_{rule}"), (slurm_id, state, comment)
        # the job's SLURM log, named by its job id, holds the Snakemake run inside the job
        log_path = Path(log)
        assert log_path.name == f"{slurm_id}.log" and log_path.is_relative_to(workdir / ".snakemake" / "slurm_logs")
        assert f"rule {rule}:" in log_path.read_text()


def data_files(results: Path) -> dict[str, Path]:
    return {
        str(path.relative_to(results)): path
        for path in results.rglob("*")
        if path.is_file() and "benchmarks" not in path.relative_to(results).parts
    }


def test_outputs_equal_a_local_run(slurm_run, tmp_path):
    workdir, _, _ = slurm_run
    local = populate(tmp_path)
    snakemake(local, "slurm.yaml", "--cores", "2")
    on_slurm, here = data_files(workdir / "results"), data_files(local / "results")
    assert sorted(on_slurm) == sorted(here)
    compared = 0
    for name, path in on_slurm.items():
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(here[name]), obj=name)
        elif path.suffix == ".csv":
            pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(here[name]), obj=name)
        else:
            continue  # figures may differ in bytes; manifests name their own folder
        compared += 1
    assert compared >= 8


def test_failing_job_fails_the_run_with_its_log(cluster, tmp_path):
    save_tiny_checkpoint(tmp_path / "checkpoints" / "broken")
    (tmp_path / "checkpoints" / "broken" / "config.json").unlink()
    copy_prompts(tmp_path, "tiny_b.jsonl")
    resources = profile_default_resources(slurm_partition=cluster.partition, slurm_account=cluster.account)
    result = on_cluster(cluster, tmp_path, "slurm_broken.yaml", *resources, timeout=300)
    assert result.returncode != 0
    failed = re.search(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", result.output)
    assert failed, result.output[-6000:]
    slurm_log = next(Path(log) for _, slurm_id, log in SUBMITTED.findall(result.output) if slurm_id == failed.group(1))
    rule = re.search(r"/rule_(\w+)/", str(slurm_log)).group(1)
    # the error names the rule's own log and the job's SLURM log, and both are there
    error = re.search(rf"Error in rule {rule}:.*?\n\s+log: (.*?) \(check log file", result.output, re.DOTALL)
    assert error, result.output[-6000:]
    logs = error.group(1).split(", ")
    assert str(slurm_log) in logs and slurm_log.exists()
    rule_log = next(tmp_path / log for log in logs if log.startswith(f"logs/{rule}/"))
    assert "no config.json" in rule_log.read_text() and f"Error in rule {rule}" in slurm_log.read_text()


def test_profile_without_partition_gets_the_plugins_error(cluster, tmp_path):
    populate(tmp_path)
    result = on_cluster(
        cluster,
        tmp_path,
        "slurm.yaml",
        *profile_default_resources(slurm_partition=None, slurm_account=cluster.account),
        timeout=120,
    )
    assert result.returncode != 0
    assert "No partition was given for rule 'prepare_model', and unable to find a default partition." in result.output
    assert (
        "sbatch: error: Batch job submission failed: No partition specified or system default partition"
        in result.output
    )
