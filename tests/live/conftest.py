"""Fixtures of the live suite: one `coco serve` per session (see livestack.py for what it holds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from liveprojects import PROJECTS, make_home
from livestack import LiveStack, coco_serve

CHROMIUM = os.environ.get("CORE4_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CORE4_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,800")


def pytest_configure(config):
    # dagster_graphql's client calls gql in a way gql deprecates; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:Using variable_values and operation_name:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    # Every test under tests/live is marked `live` (-m 'not live' runs the quick tiers only).
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> Iterator[LiveStack]:
    """`coco serve` over demo, second, ownvenv and broken; stopped at the end of the session."""
    base = tmp_path_factory.mktemp("live")
    with coco_serve(base, make_home, PROJECTS) as stack:
        yield stack


@pytest.fixture
def browser(tmp_path):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(os.environ.get("CORE4_TEST_BROWSER_SKIP")
                    or f"no {CHROMIUM} / {CHROMEDRIVER}: `make test` installs the Debian packages "
                       "chromium and chromium-driver (scripts/test-services.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER,
                                                               log_output=str(tmp_path / "chromedriver.log")))
    try:
        yield driver
    finally:
        driver.quit()
