"""Shared fixtures: hermetic configuration, one real embedded MongoDB per session, the `folders`
of project "demo" under tmp_path, a DagsterInstance per module and a DAGSTER_HOME folder.
Shared helpers are in support.py."""

from __future__ import annotations

import os
import uuid

import pytest

# The test files on tests/live's session stack (the `live` fixture of tests/live/conftest.py).
LIVE_STACK_FILES = (
    "tests/live/test_live_assets.py",
    "tests/live/test_live_browser.py",
    "tests/live/test_live_stack.py",
    "tests/live/test_operate_live.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs pytest-xdist with ``--dist loadfile``: the tests of one file run on one worker,
    in their order, so a module-scoped fixture (a DagsterInstance, a live stack of the module's own)
    is set up once; here the files of LIVE_STACK_FILES count as one file, so one worker starts the
    shared live stack and runs them all. (xdist_group marks would say this, but xdist 3.8's loadgroup
    reads them from nodeids that pytest 9 no longer carries.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LoadFileSharedLiveStack(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/live (shared stack)" if path in LIVE_STACK_FILES else path

    return LoadFileSharedLiveStack(config, log)


# The files that take longest (each a minute or more: `--durations`), started first on the xdist
# workers so that none of them is what the others wait for at the end; the rest follow in order.
SLOW_FILES_FIRST = (
    *LIVE_STACK_FILES,
    "tests/test_bench_smoke.py",
    "tests/live/test_live_recovery.py",
    "tests/live/test_operators_live.py",
    "tests/live/test_live_quiet.py",
    "tests/live/test_live_supervise.py",
    "tests/test_projects_cli.py",
    "tests/test_dagster_home.py",
    "tests/live/test_live_postgres.py",
    "tests/live/test_live_components.py",
    "tests/reliability/test_crash_modes.py",
    "tests/test_embedded_root.py",
    "tests/test_quiet.py",
    "tests/test_docs_yaml.py",
    "tests/test_embedded_auth.py",
)


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        # In one process the shared live stack's files run first and together: the stack is up
        # from their first test to their last (tests/live/conftest.py), beside no other stack.
        items.sort(key=lambda item: item.nodeid.split("::")[0] not in LIVE_STACK_FILES)
        return
    # Every worker sorts the same way, so their collections stay equal (xdist checks).
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: in order within
    # A test on the shared live stack outside LIVE_STACK_FILES would start a stack of its own on
    # another xdist worker: say where to add it.
    strays = sorted({item.nodeid.split("::")[0] for item in items if "live" in getattr(item, "fixturenames", ())}
                    - set(LIVE_STACK_FILES))
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use the `live` fixture: add them to LIVE_STACK_FILES "
                                "in tests/conftest.py")


def pytest_sessionfinish(session):
    # An xdist worker hands its reliability tally (support.TALLY) to the controller.
    if hasattr(session.config, "workeroutput"):
        from support import TALLY

        session.config.workeroutput["reliability_tally"] = dict(TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    from support import TALLY

    for key, value in getattr(node, "workeroutput", {}).get("reliability_tally", {}).items():
        TALLY[key] += value


def pytest_terminal_summary(terminalreporter):
    """What the reliability suite tried (tests/reliability), summed over the xdist workers."""
    from support import TALLY

    if any(TALLY.values()):
        counts = ", ".join(f"{key}: {value}" for key, value in TALLY.items())
        terminalreporter.write_sep("-", f"reliability: {counts}")


@pytest.fixture(autouse=True)
def isolated_config(monkeypatch, tmp_path_factory):
    """No test reads the developer's ~/.core4 or /etc/core4, or inherits CORE4_OPTION_* vars."""
    for name in list(os.environ):
        if name.startswith("CORE4_OPTION_"):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp("local-config") / "local.yaml"
    empty.write_text("")
    monkeypatch.setenv("CORE4_CONFIG", str(empty))
    return empty


@pytest.fixture(autouse=True)
def no_stale_defs_state_storage():
    """Dagster 1.13's DagsterInstance.__exit__ leaves its DefsStateStorage in a context variable;
    once that instance is garbage collected, resolving any Definitions in this process fails with
    "Attempted to resolve undefined DagsterInstance weakref". Each test starts without it."""
    from dagster._core.storage.defs_state.base import _current_storage

    token = _current_storage.set(None)
    yield
    _current_storage.reset(token)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """The real embedded MongoDB-wire server, over TCP on 127.0.0.1, stopped at the end."""
    from core4_resources.mongo.embedded.server import EmbeddedMongo

    with EmbeddedMongo(tmp_path_factory.mktemp("mongo-data")) as server:
        yield server


@pytest.fixture
def mongo_url(mongo_server) -> str:
    return mongo_server.url


@pytest.fixture
def mongo(mongo_server):
    """A MongoResource on a fresh database, dropped afterwards."""
    from core4_resources.mongo.resource import MongoResource

    resource = MongoResource(mongo_url=mongo_server.url, database=f"test_{uuid.uuid4().hex[:12]}")
    yield resource
    try:
        resource.client().drop_database(resource.database)
    except Exception:  # the server may already be gone in a test that stops it
        pass


@pytest.fixture
def folders(tmp_path):
    """A FolderResource for project "demo" with every folder under tmp_path/root (support.make_folders)."""
    from support import make_folders

    return make_folders(tmp_path / "root")


@pytest.fixture(scope="module")
def instance():
    """One throwaway DagsterInstance shared by the tests of a module."""
    import dagster as dg

    with dg.instance_for_test() as shared:
        yield shared


@pytest.fixture
def dagster_home(tmp_path) -> str:
    """An empty DAGSTER_HOME folder (telemetry off) for an instance on disk; the environment is not changed."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return str(home)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project package on sys.path whose yaml a test writes: ``project(name, yaml_text)`` -> name."""
    import textwrap

    def make(name: str, yaml_text: str = "") -> str:
        package = tmp_path / "pkgs" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('__project__ = "core4"\n')
        (package / f"{name}.yaml").write_text(textwrap.dedent(yaml_text))
        monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
        return name

    return make
