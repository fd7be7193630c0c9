"""Bad config or input gets one clear line naming the key, file or line, not a traceback, in
snakemake dry runs on tiny checkpoints."""

from __future__ import annotations

import os

import pytest

from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, parse_jobs, snakemake, snakemake_in_repo


def dry_run_error(tmp_path, config_text: str) -> str:
    (tmp_path / "bad.yaml").write_text(config_text)
    result = snakemake(tmp_path, str(tmp_path / "bad.yaml"), "--dry-run", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr + result.stdout


@pytest.fixture
def workdir(tmp_path):
    save_tiny_checkpoint(tmp_path / "checkpoints" / "base")
    copy_prompts(tmp_path, "tiny_b.jsonl")
    return tmp_path


GOOD = "models:\n  base:\n    path: checkpoints/base\nprompt_sets:\n  tiny_b: prompts/tiny_b.jsonl\n"
DEVICES = "auto, cpu, mps, cuda or cuda:N (N: a GPU index; auto: cuda when present, else cpu)"


def test_good_config_dry_runs(workdir):
    assert "generate" in snakemake(workdir, str(_write(workdir, GOOD)), "--dry-run").stdout


def test_planning_never_imports_torch(workdir, tmp_path_factory):
    """DAG time is torch-free: a dry run of a config with internals and a comparison still plans
    when importing torch (or transformers) fails."""
    blocked = tmp_path_factory.mktemp("blocked")
    for name in ("torch", "transformers"):
        (blocked / name).mkdir()
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} imported while planning')\n")
    config = (
        "models:\n  base: {path: checkpoints/base}\n  base2: {path: checkpoints/base}\n"
        "prompt_sets:\n  tiny_b: prompts/tiny_b.jsonl\n"
        "groups:\n  pair: [base, base2]\n"
        "internals:\n  depth: {prompt_sets: [tiny_b]}\n"
    )
    path = _write(workdir, config)
    env = {"PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    result = snakemake(workdir, str(path), "--dry-run", env=env)
    assert "cross_score" in result.stdout and "rule depth" in result.stdout
    assert "imported while planning" not in result.stdout + result.stderr


def _write(workdir, text):
    path = workdir / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("generation:\n  n_sampels: 2\n", "invalid config: unknown key generation.n_sampels"),
        ("generation:\n  n_samples: two\n", "invalid config at generation.n_samples: 'two' is not of type 'integer'"),
        ("runtime:\n  dtype: fp8\n", "invalid config at runtime.dtype"),
        ("colour: blue\n", "invalid config: unknown key colour"),
        ("finetune:\n  base: nope\n", "finetune.base: unknown model 'nope'"),
        ("finetune:\n  base: base\n  steps: 0\n", "invalid config at finetune.steps"),
        ("comparison:\n  prompt_sets: [nope]\n", "comparison.prompt_sets: unknown prompt set 'nope'"),
        ("comparison:\n  sources: [c]\n", "invalid config at comparison.sources"),
        ("token_view:\n  prompt_sets: [nope]\n", "token_view.prompt_sets: unknown generated prompt set 'nope'"),
        ("token_view:\n  metric: kl_divergence\n", "invalid config at token_view.metric"),
        # The report front page's run record travels in config; a config file cannot set it.
        ("_run_record: {}\n", "invalid config: unknown key _run_record"),
        # Any string used to pass and fail at job time with torch's traceback.
        ("runtime:\n  device: banana\n", f"invalid config at runtime.device: 'banana' is not {DEVICES}"),
        ("runtime:\n  device: cuda:one\n", f"invalid config at runtime.device: 'cuda:one' is not {DEVICES}"),
        ("runtime:\n  threads: 0\n", "invalid config at runtime.threads: 0 is less than the minimum of 1"),
        ("runtime:\n  mem_mb: 8GB\n", "invalid config at runtime.mem_mb: '8GB' is not of type 'integer'"),
        # A YAML syntax error: Snakemake reads the file before the workflow starts and names neither
        # the file nor the line (README, Troubleshooting).
        ("runtime: {device: cpu\n", "Config file is not valid JSON or YAML."),
    ],
)
def test_config_errors_name_the_key(workdir, extra, expected):
    assert expected in dry_run_error(workdir, GOOD + extra)


def test_missing_checkpoint_is_named(workdir):
    message = dry_run_error(workdir, GOOD.replace("checkpoints/base", "checkpoints/missing"))
    assert "models.base: checkpoint folder not found" in message and "checkpoints/missing" in message


def test_checkpoint_without_safetensors_is_named(workdir):
    (workdir / "checkpoints" / "base" / "model.safetensors").rename(
        workdir / "checkpoints" / "base" / "pytorch_model.bin"
    )
    message = dry_run_error(workdir, GOOD)
    assert "models.base: no *.safetensors weights" in message and "allow_pickle" in message


def test_unknown_group_member_is_named(workdir):
    message = dry_run_error(workdir, GOOD + "groups:\n  pair: [base, nope]\n")
    assert "groups.pair: unknown model 'nope'" in message


def test_malformed_prompt_line_is_named_in_workflow(workdir):
    path = workdir / "prompts" / "tiny_b.jsonl"
    path.write_text(path.read_text() + '{"id": "x", "messages": [{"role": "user"}]}\n')
    message = dry_run_error(workdir, GOOD)
    assert f"{path.relative_to(workdir)}, line 3: messages[0].content must be a string" in message


def test_missing_configfile_names_the_path(workdir):
    """Snakemake reads --configfile before the workflow starts: a wrong path is its traceback,
    whose last line names the path (README, Troubleshooting)."""
    missing = workdir / "no-such.yaml"
    result = snakemake(workdir, str(missing), "--dry-run", check=False)
    assert result.returncode != 0
    last = (result.stderr + result.stdout).strip().splitlines()[-1]
    assert last == f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'"


def test_configfile_replaces_the_default_config(workdir):
    """The README's command from the repository root: --configfile my.yaml plans my.yaml's models
    only, not config/config.yaml's embedded model, finetune and math24 comparison merged in."""
    absolute = GOOD.replace("checkpoints/", f"{workdir}/checkpoints/").replace("prompts/", f"{workdir}/prompts/")
    result = snakemake_in_repo("--configfile", str(_write(workdir, absolute)), "--dry-run", "--forceall")
    jobs = parse_jobs(result.stdout)
    assert {w.get("model") for _, w in jobs if "model" in w} == {"base"}
    assert {w.get("prompt_set") for _, w in jobs if "prompt_set" in w} == {"tiny_b"}
    assert not {"finetune", "cross_score", "compare_group"} & {rule for rule, _ in jobs}
    assert "config/config.yaml" not in result.stdout + result.stderr


def test_without_configfile_the_default_config_runs():
    """`make demo` (no --configfile) still runs config/config.yaml."""
    jobs = parse_jobs(snakemake_in_repo("--dry-run", "--forceall").stdout)
    assert {"finetune", "cross_score", "compare_group"} <= {rule for rule, _ in jobs}
    assert ("prepare_model", {"model": "smollm2"}) in jobs
