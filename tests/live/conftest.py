"""Fixtures of the live suite: one `coco serve` per session (see livestack.py for what it holds)."""

from __future__ import annotations

import contextlib
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


# The session's shared stack while tests still need it: stopped after the last test that uses it
# (pytest_runtest_teardown below), not at the session's end -- its daemon, webserver and code
# servers would otherwise share the 2 cores with every test that follows (a run-heavy test took
# twice as long beside it).
_SHARED: dict[str, contextlib.ExitStack] = {}
_LAST_USER: dict[str, str | None] = {}


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> Iterator[LiveStack]:
    """`coco serve` over demo, second, ownvenv and broken; stopped after its last test."""
    base = tmp_path_factory.mktemp("live")
    with contextlib.ExitStack() as running:
        stack = running.enter_context(coco_serve(base, make_home, PROJECTS))
        _SHARED["running"] = running
        yield stack
    _SHARED.pop("running", None)


def _last_user(session) -> str | None:
    """The node id of the session's last test that uses the shared stack."""
    if "nodeid" not in _LAST_USER:
        users = [item.nodeid for item in session.items if "live" in getattr(item, "fixturenames", ())]
        _LAST_USER["nodeid"] = users[-1] if users else None
    return _LAST_USER["nodeid"]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    running = _SHARED.get("running")
    if running is not None and item.nodeid == _last_user(item.session):
        del _SHARED["running"]
        running.close()


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
