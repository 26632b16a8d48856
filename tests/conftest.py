"""Shared fixtures: hermetic configuration, one real embedded MongoDB per session, the `folders`
of project "demo" under tmp_path, a DagsterInstance per module and a DAGSTER_HOME folder.
Shared helpers are in support.py."""

from __future__ import annotations

import os
import uuid

import pytest


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
