"""A real browser for the tests: Debian's chromium and chromium-driver (installed by .ci/run),
driven headless by selenium. Where either is missing the tests that need it skip and say why; with
TOKENSCOPE_REQUIRE_BROWSER=1 they fail instead."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("TOKENSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOKENSCOPE_CHROMEDRIVER", "/usr/bin/chromedriver")


def unavailable(reason: str):
    """Skip the test, or fail it where TOKENSCOPE_REQUIRE_BROWSER=1."""
    if os.environ.get("TOKENSCOPE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TOKENSCOPE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def headless_chromium() -> Iterator:
    """A selenium Chrome driver on headless Chromium, quit on exit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which(CHROMEDRIVER)):
        unavailable(f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
