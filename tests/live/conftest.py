"""Fixtures of the live suite: one `coco serve` per session (see livestack.py for what it holds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from liveprojects import PROJECTS, make_home
from livestack import LiveStack, coco_serve


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
