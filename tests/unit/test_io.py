"""Atomic writes (tokenscope.io): an interrupted job leaves no complete-looking file."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_interrupted_job_leaves_no_complete_looking_file(tmp_path):
    from tokenscope.io import write_text

    target = tmp_path / "out.parquet"

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        from tokenscope.io import write_atomic

        write_atomic(target, crash)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_text("whole", target)
    assert target.read_text() == "whole"
