"""No human after a fault, live: `kill -9` of a run worker, and of the whole `coco serve` tree
followed by a plain restart. Afterwards every file is archived once and every record is in
MongoDB once -- and not one command was typed in between.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import dagster as dg
import pymongo
import pytest
from livestack import coco_serve, descendants, drop_into_proc, visible_entries, wait_for

from core4_pipelines.ingest.job import BATCH_TAG
from core4_pipelines.supervise.recovery import UNFINISHED, worker_pid
from core4_pipelines.ingest.sensor import ATTEMPT_TAG

FILES = 24
ROWS = 40

SLOW_DEFINITIONS = '''"""slow: an import that takes a few seconds per batch, so that runs can be killed mid-way."""

import time

from core4_pipelines import import_job, proc_folder_sensor, project_definitions, read_csv


def read_slowly(path):
    for record in read_csv(path):
        time.sleep(0.02)
        yield record


import_slow = import_job("import_slow", read=read_slowly, collection="rows", properties={"error_time": 2})

defs = project_definitions(
    "slow",
    jobs=[import_slow],
    sensors=[proc_folder_sensor(import_slow, batch_size=4, min_age_seconds=1, minimum_interval_seconds=1)],
)
'''


def make_slow(home: Path, env: dict) -> None:
    if (home / "slow").exists():  # a restart serves the same home
        return
    package = home / "slow" / "slow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.1.0"\n')
    (package / "slow.yaml").write_text("DEFAULT:\n  mongo_database: slow\n")
    (package / "definitions.py").write_text(SLOW_DEFINITIONS)


def drop_files(stack, tag: str) -> dict[str, int]:
    proc = stack.root / "proc" / "slow"
    names = {}
    for i in range(FILES):
        name = f"{tag}-{i:02d}.csv"
        rows = "".join(f"{r},{tag},{i}\n" for r in range(ROWS))
        drop_into_proc(proc, name, f"row,tag,file\n{rows}".encode())
        names[name] = ROWS
    return names


def started_run(instance: dg.DagsterInstance, timeout: float = 120) -> dg.DagsterRun:
    """An import run in progress whose worker has written its start event."""

    def find():
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            if BATCH_TAG in run.tags and worker_pid(instance, run.run_id):
                return run
        return None

    return wait_for(find, timeout, "an import run to start", interval=0.2)


def all_imported_once(stack, names: dict[str, int], timeout: float = 300) -> None:
    client = pymongo.MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000)
    rows = client["slow"]["rows"]
    archive = stack.root / "archive" / "slow"
    tag = next(iter(names)).split("-")[0]

    def done():
        archived = sorted(p.name for p in archive.rglob(f"{tag}-*.csv.gz"))
        return archived == sorted(f"{n}.gz" for n in names) and rows.count_documents({"tag": tag}) == sum(
            names.values()
        )

    def state():
        proc = stack.root / "proc" / "slow"
        return (f"proc: {visible_entries(proc)}; batches: {visible_entries(proc / '.batch')}; "
                f"records: {rows.count_documents({'tag': tag})}\n" + stack.log_tail())

    try:
        wait_for(done, timeout, f"{len(names)} files imported and archived", state)
        for name, count in names.items():  # each record exactly once
            assert rows.count_documents({"_src": name}) == count, name
        assert len(rows.distinct("_id", {"tag": tag})) == sum(names.values())
        assert visible_entries(stack.root / "proc" / "slow") == []
    finally:
        client.close()


@pytest.mark.timeout(600)
def test_a_killed_run_worker_is_failed_and_its_batch_imported_again(tmp_path):
    with coco_serve(tmp_path, make_slow, ("slow",)) as stack:
        names = drop_files(stack, "worker")
        with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
            victim = started_run(instance)
            killed_at = time.time()
            os.kill(worker_pid(instance, victim.run_id), signal.SIGKILL)
            all_imported_once(stack, names)
            # Failed by Dagster's code server, which saw its child die, or by the sensor's
            # recovery when nobody did (core4/recovered=worker_gone); either way not stuck.
            assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE
            again = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: victim.tags[BATCH_TAG]}))
            assert {(run.tags.get(ATTEMPT_TAG), run.status) for run in again} >= {("2", dg.DagsterRunStatus.SUCCESS)}
            # The death is known at once: the batch's next run is requested within 30 s (a sensor
            # tick or two), not after error_time (600 s) as for a failure of the content.
            (relaunch,) = instance.get_run_records(filters=dg.RunsFilter(
                tags={BATCH_TAG: victim.tags[BATCH_TAG], ATTEMPT_TAG: "2"}))
            assert relaunch.create_timestamp.timestamp() - killed_at < 30
        # Whatever the test's umask, nothing the stack created -- Dagster's storage included --
        # is open to the group for writing or to others at all (proc/ is the test's own).
        for folder, dirs, files in [w for top in ("dagster", "archive", "mongo") for w in os.walk(stack.root / top)]:
            for name in dirs + files:
                path = os.path.join(folder, name)
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:  # the stack still runs: SQLite's -wal/-shm files come and go
                    continue
                if not stat.S_ISLNK(mode) and not name.endswith((".sock", ".lock")):
                    assert mode & 0o027 == 0, f"{path}: {oct(mode)}"


@pytest.mark.timeout(900)
def test_the_whole_stack_killed_and_restarted_finishes_every_batch(tmp_path):
    with coco_serve(tmp_path, make_slow, ("slow",)) as stack:
        names = drop_files(stack, "stack")
        with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
            started_run(instance)
        # Every process at once: coco serve, dagster dev, daemon, webserver, code server,
        # run workers and the embedded MongoDB.
        tree = [stack.process.pid, *descendants(stack.process.pid)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stack.process.wait(30)
        time.sleep(1)
    # A plain restart, as a supervisor would do it: the same command, the same folders.
    with coco_serve(tmp_path, make_slow, ("slow",)) as stack:
        # The run the kill left STARTED was failed before Dagster came up, freeing its slot.
        assert "recovered after a crash: run " in stack.log_path.read_text()
        all_imported_once(stack, names, timeout=420)
        # Runs queued before the kill may still start and find their batch done; none stays.
        with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
            wait_for(
                lambda: not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED, *UNFINISHED])),
                120, "every run to finish",
            )
