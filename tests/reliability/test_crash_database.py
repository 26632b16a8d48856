"""The database killed with SIGKILL: right after an import answered, and in the middle of one.

The embedded server acknowledges a write before it is in its journal (w:1, as
mongod does by default). An import therefore makes its batch's writes durable
(one ``j: true`` write) before it archives a single file: a server killed right
after the import lost nothing of any archived file. Killed in the middle, the
run fails, the files stay claimed, the sensor does not claim while the server
is down, and once it is back the sensor runs the batch again by itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dagster as dg
import pytest
from support import (
    STRESS,
    archived,
    content_sha256,
    count,
    csv_rows,
    make_folders,
    put,
    run_import,
    sha256_file,
    tick,
    visible_files,
)

from core4_pipelines.ingest.claim import pending_batches
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_resources.mongo.embedded.server import EmbeddedMongo
from core4_resources.files.folders import FolderResource
from core4_resources.mongo.resource import MongoResource

FILES = 8
ROWS = 400
# attempts 1 inside the run, error_time 0: the sensor asks for the batch's next run at once.
JOB = import_job("import_things", read=read_csv, collection="things", properties={"attempts": 1, "error_time": 0})


class KillableServer:
    """An embedded server of its own (the session's must live), restarted on the same port and data."""

    def __init__(self, root):
        self.storage = os.path.join(str(root), "mongo")
        self.server = EmbeddedMongo(self.storage).start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server._process.wait()
        count("kills injected")

    def restart(self) -> None:
        self.server = EmbeddedMongo(self.storage, port=self.port).start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def server(tmp_path):
    killable = KillableServer(tmp_path)
    try:
        yield killable
    finally:
        killable.stop()


def fill_proc(folders, tag: str, rows: int = ROWS) -> dict[str, str]:
    return {
        f"{tag}-{i:02d}.csv": sha256_file(put(folders.proc_folder(), f"{tag}-{i:02d}.csv", csv_rows(rows, tag=f"{tag}{i}")))
        for i in range(FILES)
    }


def check_every_archived_file_complete(folders, mongo, originals: dict[str, str], rows: int = ROWS) -> int:
    """Each archived file has all its records; returns how many files are archived."""
    things = mongo.collection("things")
    done = archived(folders)
    for name, paths in done.items():
        assert len(paths) == 1, f"{name} archived {len(paths)} times"
        assert content_sha256(paths[0]) == originals[name]
        found = things.count_documents({"_src": name})
        assert found == rows, f"{name} is archived, but {rows - found} of its {rows} records are gone"
    count("files checked", len(originals))
    return len(done)


def kill_as_archiving_starts(tmp_path, server, monkeypatch, rounds: int) -> None:
    """The server dies the moment the import starts archiving: the writes it acknowledged
    last (milliseconds ago) are exactly the ones an unjournaled server loses."""
    real_move_archive = FolderResource.move_archive_many
    killed = []

    def kill_then_archive(self, *args, **kwargs):
        if not killed:
            server.kill()
            killed.append(True)
        return real_move_archive(self, *args, **kwargs)

    monkeypatch.setattr(FolderResource, "move_archive_many", kill_then_archive)
    # Small inserts, as from small files: the server journals in the background within
    # milliseconds, so only the last insert or two before a kill are at risk.
    rows = 100
    for round_no in range(rounds):
        killed.clear()
        folders = make_folders(tmp_path / f"round{round_no}")
        mongo = MongoResource(mongo_url=server.url, database="killed")
        originals = fill_proc(folders, f"r{round_no}", rows)
        (request,) = tick(proc_folder_sensor(JOB, min_age_seconds=0, batch_size=FILES), folders, mongo).run_requests
        assert run_import(folders, mongo, request.run_key, job=JOB).success
        assert killed
        server.restart()
        mongo = MongoResource(mongo_url=server.url, database="killed")
        assert check_every_archived_file_complete(folders, mongo, originals, rows) == FILES
        assert mongo.collection("things").count_documents({}) == FILES * rows * (round_no + 1)


@pytest.mark.timeout(300)
def test_database_killed_as_the_first_file_is_archived_loses_no_record_of_an_archived_file(
    tmp_path, server, monkeypatch
):
    kill_as_archiving_starts(tmp_path, server, monkeypatch, rounds=4)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.skipif(not STRESS, reason="stress size: make test-stress (CORE4_STRESS=1)")
def test_database_killed_as_the_first_file_is_archived_stress(tmp_path, server, monkeypatch):
    kill_as_archiving_starts(tmp_path, server, monkeypatch, rounds=20)


@pytest.mark.timeout(300)
def test_database_killed_mid_import_the_sensor_waits_then_imports_the_batch_again(tmp_path, server):
    folders = make_folders(tmp_path / "root")
    mongo = MongoResource(mongo_url=server.url, database="midway", server_selection_timeout_ms=1000)
    originals = fill_proc(folders, "m")
    sensor = proc_folder_sensor(JOB, min_age_seconds=0, batch_size=FILES)
    with dg.instance_for_test() as instance:
        (request,) = tick(sensor, folders, mongo, instance).run_requests
        things = mongo.collection("things")

        def kill_when_half_written():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if things.estimated_document_count() >= FILES * ROWS // 2:
                        break
                except Exception:
                    pass
                time.sleep(0.005)
            server.kill()

        killer = threading.Thread(target=kill_when_half_written)
        killer.start()
        first = run_import(folders, mongo, request.run_key, job=JOB, instance=instance)
        killer.join()
        assert not first.success
        (batch,) = pending_batches(folders.proc_folder())  # the files wait, claimed
        # New files arrive while the database is down: the sensor does not claim them.
        put(folders.proc_folder(), "late.csv", csv_rows(ROWS, tag="late"))
        originals["late.csv"] = sha256_file(os.path.join(folders.proc_folder(), "late.csv"))
        down = tick(sensor, folders, mongo, instance)
        assert not down.run_requests
        assert "does not answer" in down.skip_message
        assert os.path.exists(os.path.join(folders.proc_folder(), "late.csv"))

        server.restart()
        mongo = MongoResource(mongo_url=server.url, database="midway")
        # No human: the next tick asks for the batch's second run (and claims the late file).
        again = tick(sensor, folders, mongo, instance).run_requests
        keys = sorted(r.run_key for r in again)
        assert f"{batch.batch_id}.run2" in keys
        for retry in again:
            result = run_import(folders, mongo, retry.tags["core4/batch"], job=JOB, instance=instance)
            assert result.success
        assert tick(sensor, folders, mongo, instance).run_requests in ([], None)
    assert check_every_archived_file_complete(folders, mongo, originals) == FILES + 1
    assert mongo.collection("things").count_documents({}) == (FILES + 1) * ROWS
    assert [p for p in visible_files(folders.proc_folder())] == []
