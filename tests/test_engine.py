"""dagster.engine: local (runs on this machine) or celery (runs on `coco worker`s): what the
configuration must hold, the dagster.yaml coco writes, and `coco worker` refusing what cannot work.
The live run of it all is tests/live/test_live_celery.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import yaml
from support import coco

from core4_pipelines.coco.instance import instance_environment, write_instance
from core4_pipelines.engine import BROKER_URL_ENV, engine_problems
from core4_pipelines.engine.run_task import project_interpreter
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError


def _config(isolated_config, tmp_path, **dagster) -> None:
    isolated_config.write_text(yaml.safe_dump({"folder": {"root": str(tmp_path / "root"), "home": str(tmp_path)},
                                               "dagster": dagster}))


def test_celery_needs_a_broker_postgres_and_a_mongodb_every_machine_reaches(isolated_config, tmp_path):
    _config(isolated_config, tmp_path, engine="celery")
    problems = " | ".join(engine_problems(load_config()))
    assert "dagster.broker_url is not set" in problems
    assert "dagster.postgres_url is not set" in problems
    assert "mongo_url is not set: the embedded MongoDB is for one machine" in problems
    done = coco("serve", env=dict(os.environ))
    assert done.returncode != 0 and "dagster.engine is celery, but dagster.broker_url is not set" in done.stderr


def test_an_unknown_engine_names_the_key_and_the_choices(isolated_config, tmp_path):
    _config(isolated_config, tmp_path, engine="kubernetes")
    with pytest.raises(ConfigError, match="dagster.engine in .*local.yaml: expected local or celery, got 'kubernetes'"):
        load_config()


def test_on_celery_dagster_yaml_names_the_supervised_launcher_and_the_broker_only_by_variable(
        isolated_config, tmp_path, monkeypatch):
    broker = "redis://:s3cret@127.0.0.1:6390/0"
    _config(isolated_config, tmp_path, engine="celery", broker_url=broker,
            postgres_url="postgresql://core4:pw@127.0.0.1:5432/dagster")
    settings = load_config()
    home = write_instance(settings)
    text = open(os.path.join(home, "dagster.yaml")).read()
    assert "s3cret" not in text and "pw@" not in text  # secrets stay in the environment
    launcher = yaml.safe_load(text)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("core4_pipelines.engine.launcher", "SupervisedCeleryRunLauncher")
    assert instance_environment(settings)[BROKER_URL_ENV] == broker
    # Dagster builds the launcher from that file (storage on SQLite here: no server needed to load it).
    config = yaml.safe_load(text)
    config.pop("storage")
    with open(os.path.join(home, "dagster.yaml"), "w") as out:
        yaml.safe_dump(config, out)
    monkeypatch.setenv(BROKER_URL_ENV, broker)
    with dg.DagsterInstance.from_config(home) as instance:
        from core4_pipelines.engine.launcher import SupervisedCeleryRunLauncher

        assert isinstance(instance.run_launcher, SupervisedCeleryRunLauncher)
        assert instance.run_launcher.broker == broker


def test_local_writes_no_launcher_and_coco_worker_says_how_to_get_one(isolated_config, tmp_path):
    _config(isolated_config, tmp_path)
    home = write_instance(load_config())
    assert "run_launcher" not in yaml.safe_load(open(os.path.join(home, "dagster.yaml")))
    done = coco("worker", env=dict(os.environ))
    assert done.returncode != 0
    assert "dagster.engine is local: runs execute on the machine of `coco serve`" in done.stderr


def test_coco_serve_on_celery_without_a_shared_mongodb_refuses_before_it_starts_anything(isolated_config, tmp_path):
    _config(isolated_config, tmp_path, engine="celery", broker_url="redis://127.0.0.1:9/0",
            postgres_url="postgresql://core4@127.0.0.1:9/dagster")
    done = coco("serve", env=dict(os.environ), timeout=60)
    assert done.returncode != 0
    assert "mongo_url is not set: the embedded MongoDB is for one machine" in done.stderr, done.stderr
    assert not (tmp_path / "root").exists()  # refused before anything was made: no embedded server, no folders


def test_a_run_goes_to_its_projects_own_interpreter_only_when_that_is_below_folder_home(tmp_path):
    home = tmp_path / "home"
    own = str(home / "prices" / ".venv" / "bin" / "python")
    assert project_interpreter(own, str(home)) == own
    assert project_interpreter("/opt/core4/.venv/bin/python", str(home)) is None  # the serving machine's own
    assert project_interpreter(sys.executable, os.path.dirname(sys.executable)) is None  # the worker's own
    assert project_interpreter(own, None) is None and project_interpreter(None, str(home)) is None


# Stands for a project's interpreter running Dagster's run worker: says it is up, and exits 3 on an interrupt.
FAKE_RUN_WORKER = """#!{python}
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(3))
with open({pidfile!r}, "w") as out:
    out.write(str(os.getpid()))
time.sleep(300)
"""

# The task's process: executes a run with the fake interpreter and writes what it answered.
TASK_PROCESS = """
import sys, types
from core4_pipelines.engine import run_task
run_task.execute_run_environment = lambda args: {{}}
code = run_task.execute_in({interpreter!r}, types.SimpleNamespace(run_id="r1"))
open({answer!r}, "w").write(str(code))
"""


def _task_with_fake_run_worker(tmp_path):
    interpreter = tmp_path / "home" / "p" / ".venv" / "bin" / "python"
    interpreter.parent.mkdir(parents=True)
    pidfile, answer = tmp_path / "child.pid", tmp_path / "answer"
    interpreter.write_text(FAKE_RUN_WORKER.format(python=sys.executable, pidfile=str(pidfile)))
    interpreter.chmod(0o755)
    task = subprocess.Popen([sys.executable, "-c", TASK_PROCESS.format(interpreter=str(interpreter),
                                                                      answer=str(answer))])
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return task, int(pidfile.read_text()), answer


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    return True  # dead, its parent (init here) not yet reaped it
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_revoked_task_interrupts_its_run_worker_and_answers_its_exit_code(tmp_path):
    task, child, answer = _task_with_fake_run_worker(tmp_path)
    try:
        task.send_signal(signal.SIGTERM)  # what Celery's revoke(terminate=True) sends: coco kill
        assert task.wait(30) == 0
        assert answer.read_text() == "3"  # the run worker had its interrupt (SIGINT) and ended by it
        assert _gone(child)
    finally:
        task.kill()


def test_a_task_process_killed_with_9_takes_its_run_worker_along(tmp_path):
    task, child, answer = _task_with_fake_run_worker(tmp_path)
    try:
        os.kill(task.pid, signal.SIGKILL)
        task.wait(10)
        assert _gone(child), f"the run worker (pid {child}) outlived its task process"
        assert not answer.exists()
    finally:
        task.kill()
        if not _gone(child, 0):
            os.kill(child, signal.SIGKILL)
