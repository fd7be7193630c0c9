"""Where the repository and the tests' data are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"
TEST_CONFIGS = REPO / "tests" / "configs"
