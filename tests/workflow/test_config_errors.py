"""Every bad input a user can give the workflow, in one table: each case is run the way a user
meets it and must end with one line naming the key, file, line or model, not a traceback.

Config and prompt set errors stop a dry run (DAG time); model and context errors stop the first
job that meets them (marked slow: they run the workflow on a tiny checkpoint), whose one line
`tokenscope error in rule <rule>: <message>` --show-failed-logs shows. Two cases are flagged
exceptions, both Snakemake's own reading of --configfile before the workflow starts (README,
Troubleshooting): a missing file is a traceback whose last line names the path, a YAML syntax
error one line naming neither the file nor the line. `device: cuda` on a machine without CUDA
is skipped where CUDA is present.

Bad inputs tested elsewhere, not repeated here: models compared token by token with different
tokenizers (tests/workflow/test_tiny.py::test_different_tokenizers_are_refused, a whole run of two
checkpoints); a full disk or quota (tests/unit/workflow/test_jobs.py, which cannot be staged on a
real disk); the other safetensors corruptions (tests/unit/model/test_validation.py) and the
library-level checks behind the cases below (tests/unit/).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import copy_prompts, parse_jobs, snakemake, snakemake_in_repo

GOOD = "models:\n  base:\n    path: checkpoints/base\nprompt_sets:\n  tiny_b: prompts/tiny_b.jsonl\n"
# Appended to GOOD by the job-time cases: on the CPU, one thread, few tokens.
QUICK = "runtime: {device: cpu, threads: 1}\ngeneration: {n_samples: 1, sampling: {max_new_tokens: 4}}\n"
DEVICES = "auto, cpu, mps, cuda or cuda:N (N: a GPU index; auto: cuda when present, else cpu)"
PROMPTS = "prompts/tiny_b.jsonl"  # two good lines (tests/data/tiny_b.jsonl)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint built once, copied into each case's working directory."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def workdir(tmp_path, checkpoint):
    """A working directory that GOOD runs in: checkpoints/base and prompts/tiny_b.jsonl."""
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / "base")
    copy_prompts(tmp_path, "tiny_b.jsonl")
    return tmp_path


def _write(workdir, text):
    path = workdir / "cfg.yaml"
    path.write_text(text)
    return path


# How a case sets up its working directory: each returns the --configfile path to run.
Setup = Callable[[Path], Path]


def config(text: str, base: str = GOOD) -> Setup:
    """GOOD (or `base`) with `text` appended."""
    return lambda workdir: _write(workdir, base + text)


def prompt_lines(data: bytes) -> Setup:
    """The prompt set gets `data` (lines 3 on) after its two good lines."""

    def setup(workdir):
        path = workdir / PROMPTS
        path.write_bytes(path.read_bytes() + data)
        return _write(workdir, GOOD)

    return setup


def empty_prompt_set(workdir):
    (workdir / PROMPTS).write_text("\n")
    return _write(workdir, GOOD)


def too_many_shards(workdir):
    """shard_size 1 on the two good lines and 100,000 more prompts."""
    path = workdir / PROMPTS
    path.write_bytes(path.read_bytes() + b"".join(user_line(id=f"n{i}") for i in range(100_000)))
    return _write(workdir, GOOD + "generation: {shard_size: 1}\n")


def missing_checkpoint(workdir):
    return _write(workdir, GOOD.replace("checkpoints/base", "checkpoints/missing"))


def pickle_only_checkpoint(workdir):
    """safetensors weights renamed to pytorch_model.bin, without allow_pickle."""
    folder = workdir / "checkpoints" / "base"
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return _write(workdir, GOOD)


def missing_configfile(workdir):
    return workdir / "no-such.yaml"


def short_context(workdir):
    """A model of 32 positions: prompt b1's 27 tokens + 8 new ones do not fit."""
    shutil.rmtree(workdir / "checkpoints" / "base")
    save_tiny_checkpoint(workdir / "checkpoints" / "base", positions=32)
    return _write(workdir, GOOD + "runtime: {device: cpu, threads: 1}\ngeneration: {sampling: {max_new_tokens: 8}}\n")


def truncated_safetensors(workdir):
    """The checkpoint's model.safetensors cut short, as by an interrupted copy."""
    weights = workdir / "checkpoints" / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return _write(workdir, GOOD + QUICK)


class _RunsCode:
    """Unpickling this calls os.getpid: harmless, but refused by torch's weights_only loading."""

    def __reduce__(self):
        return (os.getpid, ())


def refused_pickle(workdir):
    """allow_pickle: true, and a pytorch_model.bin whose unpickling would run code."""
    folder = workdir / "checkpoints" / "base"
    (folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _RunsCode()}, folder / "pytorch_model.bin")
    return _write(
        workdir, GOOD.replace("path: checkpoints/base", "path: checkpoints/base\n    allow_pickle: true") + QUICK
    )


@dataclass(frozen=True)
class BadInput:
    """One bad input: `setup` prepares it; the run ends with `expected` (every fragment) on one
    line that also names `names` (the key, file, line or model; None: the line names nothing).

    `rule`: a job-time case, failing in that rule's job (the line is `tokenscope error in rule
    <rule>: ...`), else the dry run fails. `one_line=False` flags the one case that is a traceback
    (its last line is `expected`). `{workdir}` in `expected` and `names` is the working directory.
    """

    id: str
    setup: Setup
    expected: str | tuple[str, ...]
    names: str | None
    rule: str | None = None
    one_line: bool = True
    skip: str | None = None  # a reason this case cannot be staged on this machine

    def fragments(self, workdir: Path) -> list[str]:
        expected = (self.expected,) if isinstance(self.expected, str) else self.expected
        return [fragment.replace("{workdir}", str(workdir)) for fragment in expected]


def latin1_line(prompt_id: str) -> bytes:
    line = json.dumps({"id": prompt_id, "messages": [{"role": "user", "content": "café"}]}, ensure_ascii=False)
    return line.encode("latin-1") + b"\n"


def user_line(**record) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **record}).encode() + b"\n"


NO_CUDA = "CUDA is available here" if torch.cuda.is_available() else None

# Each case: id, how to set it up, the expected fragments of its one line, what that line names.
BAD_INPUTS = [
    # --- config: schema (dry run) ---
    BadInput(
        "unknown_key_nested",
        config("generation:\n  n_sampels: 2\n"),
        "invalid config: unknown key generation.n_sampels",
        "generation.n_sampels",
    ),
    BadInput("unknown_key_top", config("colour: blue\n"), "invalid config: unknown key colour", "colour"),
    # The report front page's run record travels in config; a config file cannot set it.
    BadInput("run_record_key", config("_run_record: {}\n"), "invalid config: unknown key _run_record", "_run_record"),
    BadInput(
        "n_samples_not_integer",
        config("generation:\n  n_samples: two\n"),
        "invalid config at generation.n_samples: 'two' is not of type 'integer'",
        "generation.n_samples",
    ),
    # YAML reads 1e9 (no decimal point) as a string.
    BadInput(
        "max_new_tokens_1e9",
        config("generation: {sampling: {max_new_tokens: 1e9}}\n"),
        "invalid config at generation.sampling.max_new_tokens: '1e9' is not of type 'integer'",
        "generation.sampling.max_new_tokens",
    ),
    BadInput(
        "max_new_tokens_too_large",
        config("generation: {sampling: {max_new_tokens: 1000000000}}\n"),
        "invalid config at generation.sampling.max_new_tokens: 1000000000 is greater than the maximum of 1048576",
        "generation.sampling.max_new_tokens",
    ),
    BadInput(
        "truncate_to_context_string",
        config('generation: {truncate_to_context: "yes"}\n'),
        "invalid config at generation.truncate_to_context: 'yes' is not of type 'boolean'",
        "generation.truncate_to_context",
    ),
    BadInput(
        "shard_size_zero",
        config("generation: {shard_size: 0}\n"),
        "invalid config at generation.shard_size: 0 is less than the minimum of 1",
        "generation.shard_size",
    ),
    # Shards are named by five digits: a set cut into more than 10^5 shards is refused at planning.
    BadInput(
        "too_many_shards",
        too_many_shards,
        f"generation.shard_size: 1 splits the 100002 prompts of prompt set 'tiny_b' ({PROMPTS}) into 100002 shards",
        "generation.shard_size",
    ),
    BadInput("dtype_fp8", config("runtime:\n  dtype: fp8\n"), "invalid config at runtime.dtype", "runtime.dtype"),
    # Any string used to pass and fail at job time with torch's traceback.
    BadInput(
        "device_banana",
        config("runtime:\n  device: banana\n"),
        f"invalid config at runtime.device: 'banana' is not {DEVICES}",
        "runtime.device",
    ),
    BadInput(
        "device_cuda_one",
        config("runtime:\n  device: cuda:one\n"),
        f"invalid config at runtime.device: 'cuda:one' is not {DEVICES}",
        "runtime.device",
    ),
    BadInput(
        "threads_zero",
        config("runtime:\n  threads: 0\n"),
        "invalid config at runtime.threads: 0 is less than the minimum of 1",
        "runtime.threads",
    ),
    BadInput(
        "mem_mb_with_unit",
        config("runtime:\n  mem_mb: 8GB\n"),
        "invalid config at runtime.mem_mb: '8GB' is not of type 'integer'",
        "runtime.mem_mb",
    ),
    BadInput(
        "finetune_steps_zero",
        config("finetune:\n  base: base\n  steps: 0\n"),
        "invalid config at finetune.steps",
        "finetune.steps",
    ),
    BadInput(
        "comparison_source",
        config("comparison:\n  sources: [c]\n"),
        "invalid config at comparison.sources",
        "comparison.sources",
    ),
    BadInput(
        "token_view_metric",
        config("token_view:\n  metric: kl_divergence\n"),
        "invalid config at token_view.metric",
        "token_view.metric",
    ),
    # The name's regular expression is shown: the models key has no description to show instead.
    BadInput(
        "model_name_with_space",
        config("", GOOD.replace("  base:", "  my model:")),
        "invalid config at models: 'my model' does not match",
        "models",
    ),
    BadInput(
        "model_two_sources",
        config("", GOOD.replace("path: checkpoints/base", "path: checkpoints/base\n    hub: org/base")),
        "invalid config at models.base: ",
        "models.base",
    ),
    # A YAML syntax error: Snakemake reads the file before the workflow starts; its one line names
    # neither the file nor the line (README, Troubleshooting).
    BadInput("yaml_syntax_error", config("runtime: {device: cpu\n"), "Config file is not valid JSON or YAML.", None),
    # Snakemake reads --configfile before the workflow starts: a wrong path is its traceback, whose
    # last line names the path (README, Troubleshooting). The one case that is not one line.
    BadInput(
        "missing_configfile",
        missing_configfile,
        "FileNotFoundError: [Errno 2] No such file or directory: '{workdir}/no-such.yaml'",
        "{workdir}/no-such.yaml",
        one_line=False,
    ),
    # --- config: names it uses but does not define, conflicting keys (planning, dry run) ---
    BadInput(
        "finetune_unknown_base",
        config("finetune:\n  base: nope\n"),
        "finetune.base: unknown model 'nope'",
        "finetune.base",
    ),
    BadInput(
        "unknown_group_member",
        config("groups:\n  pair: [base, nope]\n"),
        "groups.pair: unknown model 'nope'",
        "groups.pair",
    ),
    BadInput(
        "generation_unknown_prompt_set",
        config("generation: {prompt_sets: [nope]}\n"),
        "generation.prompt_sets: unknown prompt set 'nope'",
        "generation.prompt_sets",
    ),
    BadInput(
        "comparison_unknown_prompt_set",
        config("comparison:\n  prompt_sets: [nope]\n"),
        "comparison.prompt_sets: unknown prompt set 'nope'",
        "comparison.prompt_sets",
    ),
    BadInput(
        "token_view_unknown_prompt_set",
        config("token_view:\n  prompt_sets: [nope]\n"),
        "token_view.prompt_sets: unknown generated prompt set 'nope'",
        "token_view.prompt_sets",
    ),
    BadInput(
        "outcomes_unknown_prompt_set",
        config("outcomes:\n  prompt_sets: [nope]\n"),
        "outcomes.prompt_sets: unknown generated prompt set 'nope'",
        "outcomes.prompt_sets",
    ),
    BadInput(
        "outcomes_set_without_answers",
        config("outcomes:\n  prompt_sets: [tiny_b]\n"),
        f"outcomes.prompt_sets: prompt set 'tiny_b' ({PROMPTS}) has no answers: no prompt line has an 'answer'",
        "outcomes.prompt_sets",
    ),
    BadInput(
        "pass_at_k_above_n_samples",
        config("generation: {n_samples: 4}\noutcomes: {pass_at_k: [1, 8]}\n"),
        "outcomes.pass_at_k: k = 8 is greater than generation.n_samples = 4 (pass@k needs at least k samples",
        "outcomes.pass_at_k",
    ),
    BadInput(
        "side_by_side_unknown_model",
        config("side_by_side:\n  pairs: [[base, nope]]\n"),
        "side_by_side.pairs: unknown model 'nope'",
        "side_by_side.pairs",
    ),
    BadInput(
        "side_by_side_metric",
        config("side_by_side:\n  metric: kl\n"),
        "invalid config at side_by_side.metric",
        "side_by_side.metric",
    ),
    BadInput(
        "derived_set_unknown_source",
        config("", GOOD + "  derived: {from: nope, insert: {count: 2, text: x}}\n"),
        "prompt_sets.derived.from: unknown prompt set 'nope'",
        "prompt_sets.derived.from",
    ),
    BadInput(
        "answer_pattern_does_not_compile",
        config("answers:\n  patterns: {tiny_b: 'answer: (\\d+'}\n"),
        "answers.patterns.tiny_b: the pattern 'answer: (\\\\d+' does not compile (missing ), unterminated subpattern",
        "answers.patterns.tiny_b",
    ),
    BadInput(
        "top_k_and_n_alternatives_disagree",
        config("scoring: {top_k: 7, n_alternatives: 3}\n"),
        "scoring.top_k (7) and scoring.n_alternatives (3) disagree",
        "scoring.n_alternatives",
    ),
    # --- models (dry run) ---
    BadInput(
        "missing_checkpoint_folder",
        missing_checkpoint,
        ("models.base: checkpoint folder not found", "{workdir}/checkpoints/missing"),
        "models.base",
    ),
    BadInput(
        "checkpoint_without_safetensors",
        pickle_only_checkpoint,
        ("models.base: no *.safetensors weights", "found pytorch_model.bin: set allow_pickle: true"),
        "models.base",
    ),
    # --- prompt set files (dry run: planning reads every file) ---
    BadInput(
        "prompt_set_file_not_found",
        config("", GOOD.replace(PROMPTS, "prompts/nope.jsonl")),
        "prompts/nope.jsonl: prompt set file not found",
        "prompts/nope.jsonl",
    ),
    BadInput("prompt_set_empty", empty_prompt_set, f"{PROMPTS}: prompt set is empty", PROMPTS),
    BadInput(
        "prompt_line_not_utf8",
        prompt_lines(latin1_line("b3")),
        f"{PROMPTS}, line 3: not UTF-8 text (byte 0xe9",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_invalid_json",
        prompt_lines(b'{"id": "b3", "messages": [\n'),
        f"{PROMPTS}, line 3: invalid JSON (",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_duplicate_id",
        prompt_lines(user_line(id="b1")),
        f"{PROMPTS}, line 3: duplicate id 'b1' (first on line 1)",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_unknown_key",
        prompt_lines(user_line(id="b3", answers="4")),
        f"{PROMPTS}, line 3: unknown key(s) ['answers']",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_answer_not_string_or_number",
        prompt_lines(user_line(id="b3", answer=[4])),
        f"{PROMPTS}, line 3: prompt 'b3': 'answer' must be a string or a number, got list [4]",
        f"{PROMPTS}, line 3: prompt 'b3'",
    ),
    BadInput(
        "prompt_line_missing_id",
        prompt_lines(user_line()),
        f"{PROMPTS}, line 3: missing key 'id'",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_bad_role",
        prompt_lines(b'{"id": "b3", "messages": [{"role": "human", "content": "hi"}]}\n'),
        f"{PROMPTS}, line 3: messages[0].role must be one of",
        f"{PROMPTS}, line 3",
    ),
    BadInput(
        "prompt_line_content_not_string",
        prompt_lines(b'{"id": "x", "messages": [{"role": "user"}]}\n'),
        f"{PROMPTS}, line 3: messages[0].content must be a string",
        f"{PROMPTS}, line 3",
    ),
    # --- job time (slow): the first job that meets it fails with one line ---
    BadInput(
        "prompt_exceeds_positions",
        short_context,
        "prompt 'b1': 27 prompt tokens + max_new_tokens 8 = 35 exceed the 32 positions of model 'base'",
        "prompt 'b1'",
        rule="generate_shard",
    ),
    BadInput(
        "truncated_safetensors",
        truncated_safetensors,
        ("models.base: ", "is not a valid safetensors file: file size", "truncated"),
        "{workdir}/checkpoints/base/model.safetensors",
        rule="prepare_model",
    ),
    BadInput(
        "refused_pickle",
        refused_pickle,
        ("models.base: ", "refused the pickled weights pytorch_model.bin in {workdir}/checkpoints/base", "GLOBAL"),
        "models.base",
        rule="prepare_model",
    ),
    BadInput(
        "device_cuda_without_gpu",
        config(QUICK.replace("device: cpu", "device: cuda")),
        "device 'cuda' requested but CUDA is not available",
        "'cuda'",
        rule="generate_shard",
        skip=NO_CUDA,
    ),
]


def _param(case: BadInput):
    marks = [pytest.mark.slow] if case.rule else []
    if case.skip:
        marks.append(pytest.mark.skip(reason=case.skip))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in BAD_INPUTS])
def test_bad_input_is_one_line_naming_it(workdir, case):
    configfile = case.setup(workdir)
    args = ("--dry-run",) if case.rule is None else ("--cores", "1")
    result = snakemake(workdir, str(configfile), *args, check=False)
    output = result.stderr + result.stdout
    assert result.returncode != 0
    fragments = case.fragments(workdir)
    if not case.one_line:
        assert "Traceback" in output  # the flagged exception: a traceback, named by its last line
        lines = output.strip().splitlines()[-1:]
        assert lines == fragments, output[-3000:]
    else:
        assert "Traceback" not in output, output[-3000:]
        prefix = f"tokenscope error in rule {case.rule}: " if case.rule else ""
        lines = [line for line in output.splitlines() if line.startswith(prefix) and all(f in line for f in fragments)]
        assert lines, output[-3000:]
    if case.names is not None:
        assert case.names.replace("{workdir}", str(workdir)) in lines[0]
    if case.rule:
        # --show-failed-logs showed the failed job's log: the one line, no traceback.
        logs = [path.read_text() for path in (workdir / "logs" / case.rule).rglob("*.log")]
        failed = [log for log in logs if lines[0] in log.splitlines()]
        assert failed and not any("Traceback" in log for log in failed)


def test_good_config_dry_runs(workdir):
    assert "generate" in snakemake(workdir, str(_write(workdir, GOOD)), "--dry-run").stdout


def test_a_path_model_may_read_another_runs_prepared_folder(workdir):
    """A path model pointing into results/models/<name>/ of a model this config does not define
    (an earlier run's prepared checkpoint, manifest.json included) is a checkpoint folder like
    any other: only the configured model is prepared, with that folder's files as its input."""
    other = workdir / "results" / "models" / "earlier"
    shutil.copytree(workdir / "checkpoints" / "base", other)
    (other / "manifest.json").write_text("{}")
    path = _write(workdir, GOOD.replace("path: checkpoints/base", "path: results/models/earlier"))
    jobs = parse_jobs(snakemake(workdir, str(path), "--dry-run").stdout)
    assert [w for rule, w in jobs if rule == "prepare_model"] == [{"model": "base"}]
    assert any(rule == "generate_shard" for rule, _ in jobs)


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


# The flagged exceptions, and why: both are Snakemake reading --configfile before the workflow starts.
NOT_ONE_LINE = {"missing_configfile"}  # a traceback whose last line names the path
NAMES_NOTHING = {"yaml_syntax_error"}  # one line naming neither the file nor the line


def test_bad_input_table_counts():
    """Every case is one line naming the key, file, line or model, or flagged as an exception;
    the count is the closing note's (update it when a case is added)."""
    ids = [case.id for case in BAD_INPUTS]
    assert len(ids) == len(set(ids)) == 50
    assert {case.id for case in BAD_INPUTS if not case.one_line} == NOT_ONE_LINE
    assert {case.id for case in BAD_INPUTS if case.names is None} == NAMES_NOTHING
    one_line_naming = [case for case in BAD_INPUTS if case.one_line and case.names]
    assert len(one_line_naming) == len(BAD_INPUTS) - len(NOT_ONE_LINE | NAMES_NOTHING) == 48
    assert sum(case.rule is not None for case in BAD_INPUTS) == 4  # job-time cases (slow)
