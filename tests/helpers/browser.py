"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver, never a download),
and the folder their screenshots go to: $ITH_TEST_ARTIFACTS/<kind> (default: the test's tmp dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def artifact_dir(tmp_path, kind: str) -> Path:
    out = Path(os.environ.get("ITH_TEST_ARTIFACTS") or tmp_path) / kind
    out.mkdir(parents=True, exist_ok=True)
    return out


def browser(tmp_path, window: str = "1280,1000"):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the report's browser test needs Debian's chromium and "
            "chromium-driver; install them with `apt-get install -y chromium chromium-driver` "
            "(CI installs them)",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(
            "selenium is not installed: `pip install selenium` (it is in the project's test extra)", pytrace=False
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--mute-audio",
        f"--window-size={window}",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never looks a driver up or downloads one.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
