"""Helpers shared by the tests, importable as `helpers` (pyproject.toml puts tests/ on pytest's
pythonpath): tiny models built from a config, test prompts, the per-position reference, the
workflow runner, the headless browser and the token-view page reader. Fixtures live in
tests/conftest.py; test modules import from here, never from conftest or from each other."""

import pkgutil

import pytest

# Bare asserts in the helpers (the per-position reference comparison, the page reader) get pytest's
# detailed failure messages, as they did when these functions lived in test modules.
pytest.register_assert_rewrite(*(f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__)))
