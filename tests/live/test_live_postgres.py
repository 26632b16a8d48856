"""PostgreSQL run/event/schedule storage: dagster.yaml, and the sensor-to-archive flow against a real server.

The live part starts its own PostgreSQL with pgserver (a PyPI wheel that carries
the server binaries; no root, no system package) in the test's tmp_path,
reached over its unix socket, and stops it at the end, also when the test fails.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from liveprojects import copy_demo
from livestack import coco_serve, sensor_to_archive

FAKE_URL = "postgresql://dagster:pg-Secret-0815@db.example.invalid:5432/dagster"


def test_postgres_url_makes_dagster_yaml_use_postgres_through_an_env_var(monkeypatch, tmp_path):
    from core4_pipelines.coco.instance import (
        POSTGRES_URL_ENV,
        instance_environment,
        write_instance,
    )
    from core4_resources.config.settings import load_config

    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.setenv("CORE4_OPTION_dagster__postgres_url", FAKE_URL)
    settings = load_config()
    home = Path(write_instance(settings))
    text = (home / "dagster.yaml").read_text()
    written = yaml.safe_load(text)
    assert written["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_ENV}}}
    assert "pg-Secret-0815" not in text and "db.example.invalid" not in text
    # The Dagster processes get it with the driver dagster-postgres installs (psycopg2) named.
    assert instance_environment(settings)[POSTGRES_URL_ENV] == FAKE_URL.replace("postgresql://", "postgresql+psycopg2://")

    monkeypatch.delenv("CORE4_OPTION_dagster__postgres_url")
    sqlite = yaml.safe_load((Path(write_instance(load_config())) / "dagster.yaml").read_text())
    assert "storage" not in sqlite and "SqliteRunStorage" in str(sqlite["run_storage"])


def with_login(uri: str, password: str, database: str) -> str:
    """pgserver's socket URI (``postgresql://postgres:@/postgres?host=/dir``) with a password and database."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@", path=f"/{database}"))


@pytest.fixture
def postgres_database(tmp_path):
    """A database on a PostgreSQL of this test's own that asks for a password; the server stops afterwards."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver is in the test extras: `make test` installs it")
    import psutil
    import psycopg2

    server = pgserver.get_server(tmp_path / "postgres", cleanup_mode="stop")
    postmaster = server.get_postmaster_info().process
    try:
        # pgserver's cluster trusts every local connection; make it ask for the password, so a
        # URL that lost its password on the way to Dagster fails instead of passing.
        password = secrets.token_hex(16)
        trusted = psycopg2.connect(server.get_uri())
        trusted.autocommit = True
        with trusted.cursor() as cursor:
            cursor.execute("ALTER ROLE postgres PASSWORD %s", (password,))
            cursor.execute('CREATE DATABASE "core4_live"')
            (tmp_path / "postgres" / "pg_hba.conf").write_text("local all all scram-sha-256\n")
            cursor.execute("SELECT pg_reload_conf()")
        trusted.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(server.get_uri()).close()
            except psycopg2.OperationalError:
                break
            assert time.monotonic() < deadline, "PostgreSQL still lets in a connection without password"
            time.sleep(0.2)
        yield with_login(server.get_uri(), password, "core4_live")
    finally:
        server.cleanup()
        try:
            # Stopped is gone or a zombie (its parent, pg_ctl, exited; init reaps it).
            running = postmaster.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            running = False
        if running:
            postmaster.kill()
            pytest.fail(f"the test's PostgreSQL (pid {postmaster.pid}) still ran after pgserver stopped it")


INSTANCE_INFO = "query { instance { info } }"


def test_sensor_to_archive_with_postgres_storage(postgres_database, tmp_path):
    import psycopg2

    password = urlsplit(postgres_database).password
    assert password, "the test server's URL should carry a password, to check it stays hidden"

    def demo_only(home: Path, env: dict) -> None:
        home.mkdir(parents=True)
        copy_demo(home)

    with coco_serve(tmp_path, demo_only, ("demo",), dagster={"postgres_url": postgres_database}) as stack:
        flow = sensor_to_archive(stack, timeout=120)
        for run_id in flow["run_ids"]:
            assert stack.wait_for_run(run_id, 60)["status"] == "SUCCESS"
        printed = stack.coco("config")
        assert printed.returncode == 0, printed.stderr
        assert "dagster.postgres_url" in printed.stdout and password not in printed.stdout + printed.stderr
        info = stack.graphql(INSTANCE_INFO)["instance"]["info"] or ""
        assert "PostgresRunStorage" in info or "postgres" in info.lower(), info[:500]
        assert password not in info

    with psycopg2.connect(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (flow["run_ids"],))
        stored = dict(cursor.fetchall())
    connection.close()
    assert stored == {run_id: "SUCCESS" for run_id in flow["run_ids"]}

    dagster_home = stack.dagster_home
    assert not list(dagster_home.rglob("*.db")), "runs went to SQLite, not PostgreSQL"
    assert password not in (dagster_home / "dagster.yaml").read_text()
    assert password not in stack.log_path.read_text(errors="replace")
