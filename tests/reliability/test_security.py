"""Security: paths stay inside their folders, folders are 0o750, the UI binds loopback, secrets stay hidden."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import dagster as dg
import pytest
from reliability_support import (
    JOB,
    claim_all,
    count,
    csv_rows,
    event_log_text,
    failure_text,
    put,
    run_import,
)

from core4_pipelines.jobs import download_to_proc, import_run_config
from core4_pipelines.sensors import proc_folder_sensor
from core4_resources.config import load_config
from core4_resources.embedded import free_port
from core4_resources.errors import FolderError
from core4_resources.folders import safe_move
from core4_resources.mongo import MongoResource

SECRET = "S3cret-pw"
SECRET_URL = f"mongodb://core4:{SECRET}@127.0.0.1:{free_port()}/?authSource=admin"


def snapshot(tmp_path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), tmp_path)
                  for d, dirs, files in os.walk(tmp_path) for n in dirs + files)


# -- paths never escape their folder ----------------------------------------------------------

ESCAPES = ["../outside", "../../outside", "/etc/passwd", "a/../../outside", "", "a\0b"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_names_from_outside_cannot_leave_their_folder(rfolders, tmp_path, bad):
    count("bad inputs tried")
    source = put(tmp_path / "incoming", "x.csv", "a\n1\n")
    before = snapshot(tmp_path)
    attempts = [
        lambda: rfolders.make_proc(bad),
        lambda: rfolders.make_transfer(bad),
        lambda: rfolders.make_temp(bad),
        lambda: rfolders.list_proc(base=bad),
        lambda: rfolders.move_proc(source, base=bad),
        lambda: rfolders.move_transfer(source, base=bad),
        lambda: rfolders.move_error(source, "why", base=bad),
        lambda: rfolders.move_archive(source, base=bad, run_id="r1"),
        lambda: rfolders.model_copy(update={"archive_stamp": bad or "{_id}/../.."}).move_archive(source, run_id="r"),
        lambda: safe_move(source, str(tmp_path / "t"), name=bad or ".."),
    ]
    for attempt in attempts:
        with pytest.raises(FolderError):
            attempt()
    assert snapshot(tmp_path) == before
    assert open(source).read() == "a\n1\n"


def test_a_project_folder_linked_to_outside_is_refused(rfolders, tmp_path):
    count("bad inputs tried")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(rfolders.proc)
    os.symlink(outside, os.path.join(rfolders.proc, "demo"))
    with pytest.raises(FolderError, match="outside"):
        rfolders.proc_folder()
    with pytest.raises(FolderError, match="outside"):
        rfolders.move_proc(put(tmp_path / "in", "x.csv", "a\n"))
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
def test_run_config_cannot_point_an_import_outside_proc(rfolders, mongo, tmp_path, config, expected):
    count("bad inputs tried")
    put(rfolders.proc_folder(), "a.csv", csv_rows(2))
    before = snapshot(tmp_path)
    op = f"{JOB.name}_batch"
    result = JOB.execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources={"folders": rfolders, "mongo": mongo}, raise_on_error=False,
    )
    assert not result.success and expected in failure_text(result)
    assert snapshot(tmp_path) == before
    assert mongo.collection("things").count_documents({}) == 0


def test_a_sensor_with_a_base_outside_proc_fails_its_tick(rfolders, mongo):
    count("bad inputs tried")
    sensor = proc_folder_sensor(JOB, base="../../elsewhere")
    with pytest.raises(Exception, match="contains '..'"):
        sensor.evaluate_tick(dg.build_sensor_context(resources={"folders": rfolders, "mongo": mongo}))


# -- folders are created 0o750 ----------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_every_folder_the_flow_creates_is_0o750(rfolders, mongo, umask):
    old = os.umask(umask)
    try:
        download_to_proc(rfolders, "2024/good.csv", lambda out: out.write(csv_rows(3)))
        download_to_proc(rfolders, "bad.csv", lambda out: out.write(b"id,x\n1\n"))
        rfolders.make_temp_folder()
        rfolders.make_temp("sub/dir/file")
        os.utime(rfolders.proc_folder(), None)
        (batch_id,) = claim_all(rfolders)
        result = run_import(rfolders, mongo, batch_id)
        assert not result.success  # bad.csv went to the error folder
    finally:
        os.umask(old)
    folders = [d for d, _, _ in os.walk(rfolders.root)]
    assert len(folders) >= 10
    modes = {d: oct(stat.S_IMODE(os.stat(d).st_mode)) for d in folders}
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
        if command[1:2] != ["dev"]:  # the check for orphaned runs before it (python -m ...recovery): real
            return real_popen(command, **kwargs)
        started.append((command, kwargs.get("env") or {}))
        # A real, harmless process in its own session stands in for `dagster dev`.
        return real_popen([sys.executable, "-c", "pass"], start_new_session=True)

    monkeypatch.setattr(serve.subprocess, "Popen", record)
    # The stand-in exits at once: coco serve reports a dagster dev that died, non-zero.
    assert cli.main(["serve"]) == 1
    ((command, _env),) = started
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert command[1] == "dev"
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    assert "core4:***@127.0.0.1" in printed.out


# -- no secret in printed config, error messages, logs, run config or the UI ------------------


def test_coco_config_never_prints_a_password(tmp_path):
    count("bad inputs tried")
    local = tmp_path / "local.yaml"
    local.write_text(f"DEFAULT:\n  mongo_url: {SECRET_URL}\n"
                     f"dagster:\n  postgres_url: postgresql://dagster:{SECRET}@db/dagster\n")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "coco"), "config"],
                          capture_output=True, text=True, env={**os.environ, "CORE4_CONFIG": str(local)})
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
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "coco"), "config"],
                          capture_output=True, text=True, env={**os.environ, "CORE4_CONFIG": str(local)})
    assert done.returncode == 2 and str(local) in done.stderr
    assert SECRET not in done.stdout + done.stderr, done.stderr


def test_no_password_in_run_logs_run_config_or_tags(rfolders, tmp_path):
    count("bad inputs tried")
    put(rfolders.proc_folder(), "a.csv", csv_rows(2))
    (batch_id,) = claim_all(rfolders)
    dead = MongoResource(mongo_url=SECRET_URL, database="x", server_selection_timeout_ms=300)
    with dg.instance_for_test() as instance:
        result = run_import(rfolders, dead, batch_id, instance=instance)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert SECRET not in repr(run.run_config) + repr(run.tags)
        logs = event_log_text(instance, result.run_id)
        assert "core4:***@127.0.0.1" in logs
        assert SECRET not in logs


def test_the_ui_never_shows_the_mongodb_password(tmp_path, monkeypatch):
    """The job snapshot is what the UI renders (launchpad defaults, resource config)."""
    from dagster._serdes import serialize_value

    from core4_pipelines.project import project_definitions

    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", SECRET_URL)
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    project_yaml = tmp_path / "secure.yaml"
    project_yaml.write_text("")
    defs = project_definitions("secure", jobs=[JOB], project_yaml=str(project_yaml))
    job = defs.resolve_job_def(JOB.name)
    shown = serialize_value(job.get_job_snapshot())
    assert SECRET not in shown
    # ...and the run the UI launches still reaches the configured server (it fails fast here).
    result = job.execute_in_process(run_config=import_run_config(job, "20240101T000000-0123abcd"),
                                    raise_on_error=False)
    assert result.success  # an empty batch: nothing to do, no connection needed
