"""Rule scripts' job-time wrapper (workflow.jobs.run_script): failures a user can fix end the job
with one line naming the rule and what to fix, in the rule's log and on the terminal."""

from __future__ import annotations

import errno
import logging
import sys
from types import SimpleNamespace

import pytest

from tokenscope.errors import PromptSetError
from tokenscope.workflow.jobs import run_script


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A rule's `snakemake` object; run_script's redirection of stderr and logging is undone after."""
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    outputs = [str(tmp_path / "results" / "tokens.parquet"), str(tmp_path / "results" / "generations.parquet")]
    yield SimpleNamespace(rule="generate", log=[str(tmp_path / "generate.log")], threads=1, output=outputs)
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def one_line_failure(job, capfd, error: BaseException) -> str:
    """Run a rule script whose main raises `error`; the job's one error line (log and terminal agree)."""

    def main(_):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_script(job, main)
    assert exit_info.value.code == 1
    terminal = capfd.readouterr().err
    log = open(job.log[0]).read()
    assert "Traceback" not in terminal + log
    lines = [line for line in log.splitlines() if line.startswith("tokenscope error")]
    assert len(lines) == 1 and lines[0] in terminal.splitlines()
    return lines[0]


def test_tokenscope_error_is_one_line(job, capfd):
    line = one_line_failure(job, capfd, PromptSetError("prompts/a.jsonl, line 3: messages must be a list"))
    assert line == "tokenscope error in rule generate: prompts/a.jsonl, line 3: messages must be a list"


def test_disk_full_names_the_file(job, capfd, tmp_path):
    target = tmp_path / "results" / "summary.csv"
    line = one_line_failure(job, capfd, OSError(errno.ENOSPC, "No space left on device", str(target)))
    assert line == f"tokenscope error in rule generate: no space left on device writing {target}"


def test_disk_full_in_an_atomic_writer_names_the_final_file(job, capfd, tmp_path):
    """tokenscope.io writes `.{name}.XXXXXXXX.tmp` beside the file and renames it when complete."""
    tmp_file = tmp_path / "results" / ".tokens.parquet.k3_x9zq1.tmp"
    line = one_line_failure(job, capfd, OSError(errno.ENOSPC, "No space left on device", str(tmp_file)))
    assert line.endswith(f"no space left on device writing {tmp_path / 'results' / 'tokens.parquet'}")


def test_quota_exceeded_names_the_file(job, capfd, tmp_path):
    target = tmp_path / "results" / "model.safetensors"
    line = one_line_failure(job, capfd, OSError(errno.EDQUOT, "Disk quota exceeded", str(target)))
    assert line == f"tokenscope error in rule generate: disk quota exceeded writing {target}"


def test_disk_full_without_a_file_name_names_the_outputs(job, capfd):
    """A plain write() and pyarrow's writers raise ENOSPC without a file name."""
    error = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    line = one_line_failure(job, capfd, error)
    assert line == f"tokenscope error in rule generate: no space left on device writing {', '.join(job.output)}"


def test_disk_full_behind_another_error_or_only_in_the_text(job, capfd, tmp_path):
    target = tmp_path / "results" / "x.parquet"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        except OSError as cause:
            raise RuntimeError("could not save the table") from cause
    except RuntimeError as wrapped:
        line = one_line_failure(job, capfd, wrapped)
    assert line.endswith(f"no space left on device writing {target}")
    # safetensors: its own error type, the errno only in the text.
    text_only = RuntimeError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    assert one_line_failure(job, capfd, text_only).startswith("tokenscope error in rule generate: no space left")


def test_other_errors_keep_their_traceback(job):
    def main(_):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "results/missing.parquet")

    with pytest.raises(FileNotFoundError):
        run_script(job, main)
