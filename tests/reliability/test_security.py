"""Security: paths stay inside their folders, folders are 0o750, the UI binds loopback, secrets stay hidden."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid

import dagster as dg
import pymongo
import pytest
from support import (
    JOB,
    claim_all,
    coco,
    count,
    csv_rows,
    event_log_text,
    failure_text,
    make_folders,
    put,
    run_import,
    tick,
)

from core4_pipelines.ingest.job import download_to_proc, import_run_config
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_resources.config.settings import load_config
from core4_resources.mongo.embedded.server import free_port
from core4_resources.errors import FolderError
from core4_resources.files.folders import safe_move
from core4_resources.mongo.resource import MongoResource

SECRET = "S3cret-pw"
SECRET_URL = f"mongodb://core4:{SECRET}@127.0.0.1:{free_port()}/?authSource=admin"


def snapshot(tmp_path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), tmp_path)
                  for d, dirs, files in os.walk(tmp_path) for n in dirs + files)


# -- paths never escape their folder ----------------------------------------------------------

ESCAPES = ["../outside", "../../outside", "/etc/passwd", "a/../../outside", "", "a\0b"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_names_from_outside_cannot_leave_their_folder(folders, tmp_path, bad):
    count("bad inputs tried")
    source = put(tmp_path / "incoming", "x.csv", "a\n1\n")
    before = snapshot(tmp_path)
    attempts = [
        lambda: folders.make_proc(bad),
        lambda: folders.make_transfer(bad),
        lambda: folders.make_temp(bad),
        lambda: folders.list_proc(base=bad),
        lambda: folders.move_proc(source, base=bad),
        lambda: folders.move_transfer(source, base=bad),
        lambda: folders.move_error(source, "why", base=bad),
        lambda: folders.move_archive(source, base=bad, run_id="r1"),
        lambda: folders.model_copy(update={"archive_stamp": bad or "{_id}/../.."}).move_archive(source, run_id="r"),
        lambda: safe_move(source, str(tmp_path / "t"), name=bad or ".."),
    ]
    for attempt in attempts:
        with pytest.raises(FolderError):
            attempt()
    assert snapshot(tmp_path) == before
    assert open(source).read() == "a\n1\n"


def test_a_project_folder_linked_to_outside_is_refused(folders, tmp_path):
    count("bad inputs tried")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(folders.proc)
    os.symlink(outside, os.path.join(folders.proc, "demo"))
    with pytest.raises(FolderError, match="outside"):
        folders.proc_folder()
    with pytest.raises(FolderError, match="outside"):
        folders.move_proc(put(tmp_path / "in", "x.csv", "a\n"))
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"batch_id": "../../../etc"}, "is not a batch id"),
        ({"batch_id": "20240101T000000-0123abcd/../../x"}, "is not a batch id"),
        ({"batch_id": "20240101T000000-0123abcd", "base": "../../.."}, "contains '..'"),
        ({"batch_id": "20240101T000000-0123abcd", "base": "/etc"}, "is absolute"),
    ],
)
def test_run_config_cannot_point_an_import_outside_proc(folders, mongo, tmp_path, config, expected):
    count("bad inputs tried")
    put(folders.proc_folder(), "a.csv", csv_rows(2))
    before = snapshot(tmp_path)
    op = f"{JOB.name}_batch"
    result = JOB.execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources={"folders": folders, "mongo": mongo}, raise_on_error=False,
    )
    assert not result.success and expected in failure_text(result)
    assert snapshot(tmp_path) == before
    assert mongo.collection("things").count_documents({}) == 0


def test_a_sensor_with_a_base_outside_proc_fails_its_tick(folders, mongo):
    count("bad inputs tried")
    sensor = proc_folder_sensor(JOB, base="../../elsewhere")
    with pytest.raises(Exception, match="contains '..'"):
        tick(sensor, folders, mongo)


# -- folders are created 0o750 ----------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_every_folder_the_flow_creates_is_0o750(folders, mongo, umask):
    old = os.umask(umask)
    try:
        download_to_proc(folders, "2024/good.csv", lambda out: out.write(csv_rows(3)))
        download_to_proc(folders, "bad.csv", lambda out: out.write(b"id,x\n1\n"))
        folders.make_temp_folder()
        folders.make_temp("sub/dir/file")
        os.utime(folders.proc_folder(), None)
        (batch_id,) = claim_all(folders)
        result = run_import(folders, mongo, batch_id)
        assert not result.success  # bad.csv went to the error folder
    finally:
        os.umask(old)
    made = [d for d, _, _ in os.walk(folders.root)]
    assert len(made) >= 10
    modes = {d: oct(stat.S_IMODE(os.stat(d).st_mode)) for d in made}
    assert {m for m in modes.values()} == {"0o750"}, {d: m for d, m in modes.items() if m != "0o750"}


# -- the webserver listens on 127.0.0.1 -------------------------------------------------------


def test_serve_binds_the_ui_to_loopback_by_default(tmp_path, monkeypatch, capsys):
    from core4_pipelines.coco import cli, serve

    assert load_config().dagster.host == "127.0.0.1"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CORE4_OPTION_folder__home", str(home))
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", SECRET_URL)  # no embedded server needed
    monkeypatch.setenv("CORE4_OPTION_dagster__port", str(free_port()))  # 3000 may be taken
    started = []
    real_popen = subprocess.Popen

    def record(command, **kwargs):
        if "dev" not in command:  # the check for orphaned runs before it (python -m ...recovery): real
            return real_popen(command, **kwargs)
        started.append((command, kwargs.get("env") or {}))
        # A real, harmless process in its own session stands in for `dagster dev`.
        return real_popen([sys.executable, "-c", "pass"], start_new_session=True)

    monkeypatch.setattr(serve.subprocess, "Popen", record)
    # The stand-in exits at once: coco serve starts it again 3 times, then reports it died, non-zero.
    assert cli.main(["serve"]) == 1
    assert len(started) == 4 and len({tuple(command) for command, _ in started}) == 1  # the same command each time
    command, _env = started[0]
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert command[command.index("dev") - 1:command.index("dev") + 1] == ["dagster", "dev"]
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    assert "core4:***@127.0.0.1" in printed.out


# -- no secret in printed config, error messages, logs, run config or the UI ------------------


def test_coco_config_never_prints_a_password(tmp_path):
    count("bad inputs tried")
    local = tmp_path / "local.yaml"
    local.write_text(f"DEFAULT:\n  mongo_url: {SECRET_URL}\n"
                     f"dagster:\n  postgres_url: postgresql://dagster:{SECRET}@db/dagster\n")
    done = coco("config", env={**os.environ, "CORE4_CONFIG": str(local)})
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "core4:***@127.0.0.1" in done.stdout and "dagster:***@db" in done.stdout


@pytest.mark.parametrize(
    "text",
    [
        f"DEFAULT:\n  mongo_url: ['{SECRET_URL}']\n",
        f"DEFAULT:\n  mongo_url: {{url: '{SECRET_URL}'}}\n",
        f"dagster:\n  postgres_url: [postgresql://dagster:{SECRET}@db/dagster]\n",
        f"- {SECRET_URL}\n",
    ],
    ids=["url-in-a-list", "url-in-a-mapping", "postgres-url-in-a-list", "top-level-list"],
)
def test_a_config_error_never_shows_a_password(tmp_path, text):
    count("bad inputs tried")
    local = tmp_path / "local.yaml"
    local.write_text(text)
    done = coco("config", env={**os.environ, "CORE4_CONFIG": str(local)})
    assert done.returncode == 2 and str(local) in done.stderr
    assert SECRET not in done.stdout + done.stderr, done.stderr


def test_no_password_in_run_logs_run_config_or_tags(folders, tmp_path):
    count("bad inputs tried")
    put(folders.proc_folder(), "a.csv", csv_rows(2))
    (batch_id,) = claim_all(folders)
    dead = MongoResource(mongo_url=SECRET_URL, database="x", server_selection_timeout_ms=300)
    with dg.instance_for_test() as instance:
        result = run_import(folders, dead, batch_id, instance=instance)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert SECRET not in repr(run.run_config) + repr(run.tags)
        logs = event_log_text(instance, result.run_id)
        assert "core4:***@127.0.0.1" in logs
        assert SECRET not in logs


def test_the_ui_never_shows_the_mongodb_password(tmp_path, monkeypatch, mongo_server):
    """The job snapshot is what the UI renders (launchpad defaults, resource config); the run it
    launches still imports into the configured server, whose password the snapshot hides."""
    from urllib.parse import urlsplit

    from dagster._serdes import serialize_value

    from core4_pipelines.project.definitions import project_definitions
    from core4_pipelines.settings import mongo_url_env_name

    password = urlsplit(mongo_server.url).password
    database = f"secure_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", mongo_server.url)
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", database)
    monkeypatch.setenv(mongo_url_env_name("secure"), "")  # project_definitions sets it; restored after
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    project_yaml = tmp_path / "secure.yaml"
    project_yaml.write_text("")
    defs = project_definitions("secure", jobs=[JOB], project_yaml=str(project_yaml))
    job = defs.resolve_job_def(JOB.name)
    shown = serialize_value(job.get_job_snapshot())
    assert password and password not in shown
    # ...and the run the UI launches reaches the configured server: a real batch lands in it.
    folders = make_folders(tmp_path / "root", "secure")
    put(folders.proc_folder(), "a.csv", csv_rows(3))
    (batch_id,) = claim_all(folders)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=import_run_config(job, batch_id), instance=instance,
                                        raise_on_error=False)
        assert result.success, failure_text(result, job)
        assert password not in event_log_text(instance, result.run_id)
    with pymongo.MongoClient(mongo_server.url) as client:
        try:
            assert sorted(r["id"] for r in client[database]["things"].find()) == [0, 1, 2]
        finally:
            client.drop_database(database)
