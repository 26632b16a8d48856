"""PostgreSQL run/event/schedule storage: dagster.yaml, and the sensor-to-archive flow against a real server.

The live part needs CORE4_TEST_POSTGRES_URL (a database on a server that may
create databases); `make test` exports it from scripts/test-services.sh, which
starts a throwaway PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from liveprojects import copy_demo
from livestack import coco_serve, sensor_to_archive

POSTGRES_URL = os.environ.get("CORE4_TEST_POSTGRES_URL")
FAKE_URL = "postgresql://dagster:pg-Secret-0815@db.example.invalid:5432/dagster"


def test_postgres_url_makes_dagster_yaml_use_postgres_through_an_env_var(monkeypatch, tmp_path):
    from core4_pipelines.coco.instance import (
        POSTGRES_URL_ENV,
        instance_environment,
        write_instance,
    )
    from core4_resources.config import load_config

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


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture
def postgres_database():
    """A fresh database on the test server, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip(os.environ.get("CORE4_TEST_POSTGRES_SKIP")
                    or "CORE4_TEST_POSTGRES_URL is not set: `make test` starts a throwaway PostgreSQL "
                       "(scripts/test-services.sh) and exports it")
    import psycopg2

    name = f"core4_live_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield with_database(POSTGRES_URL, name)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


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
