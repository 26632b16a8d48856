"""Faults inside one batch: a slow writer, a file that changes or vanishes mid-import, a full
archive disk, and names at the limits. One file's trouble never stops the rest of its batch."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import dagster as dg

from core4_pipelines.ingest import sensor as sensor_module
from core4_pipelines.tags import FAILURE_KIND_TAG
import pytest
from support import (
    archived,
    content_sha256,
    count,
    csv_rows,
    failure_text,
    put,
    run_import,
    sha256_file,
    tick,
    visible_files,
    claim_all,
    event_log_text,
    hidden_files,
)

from core4_pipelines.ingest.claim import batch_files, pending_batches
from core4_pipelines.ingest.job import BATCH_TAG, import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_resources.files.folders import FolderResource, printable_name

JOB = import_job("import_things", read=read_csv, collection="things", properties={"error_time": 0})


def claim(folders, mongo, **options) -> str:
    (request,) = tick(proc_folder_sensor(JOB, min_age_seconds=0, **options), folders, mongo).run_requests
    return request.run_key


def test_a_writer_that_pauses_longer_than_min_age_is_imported_whole_once(folders, mongo):
    """The writer keeps its file open and pauses 1.5 s (> min_age 0.5 s) between rows."""
    count("bad inputs tried")
    path = os.path.join(folders.proc_folder(), "slow.csv")
    os.makedirs(folders.proc_folder(), exist_ok=True)
    script = (
        "import sys, time\n"
        f"f = open({path!r}, 'w')\n"
        "f.write('id,tag,value\\n'); f.flush()\n"
        "for part in range(4):\n"
        "    for i in range(part * 10, part * 10 + 10):\n"
        "        f.write(f'{i},slow,{i}\\n')\n"
        "    f.flush()\n"
        "    time.sleep(1.5)\n"
        "f.close()\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script])
    sensor = proc_folder_sensor(JOB, min_age_seconds=0.5)
    with dg.instance_for_test() as instance:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for request in tick(sensor, folders, mongo, instance).run_requests or []:
                    run_import(folders, mongo, request.tags[BATCH_TAG], job=JOB, instance=instance)
                if writer.poll() is not None and not os.path.exists(path) and not pending_batches(folders.proc_folder()):
                    break
                time.sleep(0.2)
        finally:
            writer.kill()
            writer.wait()
    things = mongo.collection("things")
    assert sorted(d["id"] for d in things.find({"_src": "slow.csv"})) == list(range(40))
    (paths,) = archived(folders).values()
    assert len(paths) == 1


def test_a_file_that_grows_while_it_is_read_goes_back_to_proc_without_records(folders, mongo):
    count("bad inputs tried")
    put(folders.proc_folder(), "growing.csv", csv_rows(5, tag="g"))
    put(folders.proc_folder(), "steady.csv", csv_rows(5, tag="s"))

    def read_while_a_writer_appends(path):
        if os.path.basename(path) == "growing.csv":
            with open(path, "a") as handle:
                handle.write("5,g,2.5\n")
        yield from read_csv(path)

    job = import_job("import_things", read=read_while_a_writer_appends, collection="things")
    batch = claim(folders, mongo)
    result = run_import(folders, mongo, batch, job=job)
    assert result.success
    things = mongo.collection("things")
    assert things.count_documents({"_src": "growing.csv"}) == 0
    assert things.count_documents({"_src": "steady.csv"}) == 5
    assert visible_files(folders.proc_folder()) == [os.path.join(folders.proc_folder(), "growing.csv")]
    # Claimed again later, it is imported whole.
    batch = claim(folders, mongo)
    assert run_import(folders, mongo, batch).success
    assert things.count_documents({"_src": "growing.csv"}) == 6


def test_a_file_deleted_from_its_batch_mid_run_does_not_fail_the_others(folders, mongo):
    count("bad inputs tried")
    for name in ("a.csv", "b.csv", "c.csv"):
        put(folders.proc_folder(), name, csv_rows(4, tag=name))
    batch = claim(folders, mongo)

    def read_and_lose_b(path):
        if os.path.basename(path) == "a.csv":
            os.unlink(os.path.join(os.path.dirname(path), "b.csv"))  # someone removes it
        yield from read_csv(path)

    job = import_job("import_things", read=read_and_lose_b, collection="things")
    result = run_import(folders, mongo, batch, job=job)
    assert result.success
    assert sorted(mongo.collection("things").distinct("_src")) == ["a.csv", "c.csv"]
    assert sorted(archived(folders)) == ["a.csv", "c.csv"]
    (event,) = result.get_asset_materialization_events()
    outcomes = {r.data["file"]: r.data["outcome"] for r in event.materialization.metadata["file_table"].value.records}
    assert outcomes == {"a.csv": "imported", "b.csv": "vanished", "c.csv": "imported"}


def test_a_full_archive_disk_keeps_the_file_claimed_and_the_sensor_finishes_it(folders, mongo, monkeypatch):
    count("bad inputs tried")
    originals = {n: sha256_file(put(folders.proc_folder(), n, csv_rows(3, tag=n))) for n in ("x.csv", "y.csv")}
    real = FolderResource.move_archive_many
    full = {"y.csv"}

    def archive_on_a_full_disk(self, sources, *args, **kwargs):
        room = iter(real(self, [s for s in sources if os.path.basename(s) not in full], *args, **kwargs))
        return [OSError(errno.ENOSPC, "No space left on device", s) if os.path.basename(s) in full else next(room)
                for s in sources]

    monkeypatch.setattr(FolderResource, "move_archive_many", archive_on_a_full_disk)
    monkeypatch.setattr(sensor_module, "OUTAGE_FIRST_WAIT", 0.0)  # the disk's fault: again soon, no attempt used
    sensor = proc_folder_sensor(JOB, min_age_seconds=0)
    with dg.instance_for_test() as instance:
        (request,) = tick(sensor, folders, mongo, instance).run_requests
        first = run_import(folders, mongo, request.run_key, instance=instance)
        assert not first.success
        assert "y.csv: OSError" in failure_text(first) and "stay in batch" in failure_text(first)
        assert instance.get_run_by_id(first.run_id).tags[FAILURE_KIND_TAG] == "infrastructure"
        (batch,) = pending_batches(folders.proc_folder())
        assert batch_files(batch.path) == ["y.csv"]
        full.clear()  # space again
        (again,) = tick(sensor, folders, mongo, instance).run_requests
        assert again.run_key == f"{request.run_key}.run2"
        assert run_import(folders, mongo, request.run_key, instance=instance).success
    things = mongo.collection("things")
    assert things.count_documents({}) == 6 and things.count_documents({"_src": "y.csv"}) == 3
    for name, (path,) in archived(folders).items():
        assert content_sha256(path) == originals[name]
    assert visible_files(folders.proc_folder()) == []


@pytest.mark.parametrize(
    "name",
    [
        "r" * 251 + ".csv",  # 255 bytes: .gz, .reason.txt and the hidden temp names would not fit
        "ü" * 125 + "x.csv",  # 256 characters would not do; 255 bytes of two-byte characters
        os.fsdecode(b"caf\xe9-latin1.csv"),  # not UTF-8
    ],
    ids=["255-ascii", "255-utf8", "not-utf8"],
)
def test_every_legal_name_is_imported_and_archived(folders, mongo, name):
    count("bad inputs tried")
    assert len(os.fsencode(name)) <= 255
    original = sha256_file(put(folders.proc_folder(), name, csv_rows(3, tag="n")))
    put(folders.proc_folder(), "bad.csv", "id,tag\n1\n")  # in the same batch: to error
    result = run_import(folders, mongo, claim(folders, mongo))
    assert not result.success and "bad.csv" in failure_text(result)
    shown = printable_name(name)
    assert mongo.collection("things").count_documents({"_src": shown}) == 3
    (archive,) = [p for p in visible_files(folders.archive_folder())]
    assert len(os.fsencode(os.path.basename(archive))) <= 255
    assert content_sha256(archive) == original
    assert visible_files(folders.proc_folder()) == []


def test_a_long_name_with_bad_content_goes_to_error_with_its_reason(folders, mongo):
    count("bad inputs tried")
    name = "e" * 251 + ".csv"
    put(folders.proc_folder(), name, "id,tag\n1\n")
    result = run_import(folders, mongo, claim(folders, mongo))
    assert not result.success
    error_files = visible_files(folders.error_folder())
    assert os.path.join(folders.error_folder(), name) in error_files
    (reason,) = [p for p in error_files if p.endswith(".reason.txt")]
    assert name in open(reason, encoding="utf-8").read()


def test_a_reader_yielding_keys_mongodb_cannot_store_sends_the_file_to_error(folders, mongo):
    count("bad inputs tried")
    put(folders.proc_folder(), "operators.jsonl", "ignored")
    put(folders.proc_folder(), "fine.jsonl", "ignored")

    def read_records(path):
        yield {"a": 1}
        if os.path.basename(path) == "operators.jsonl":
            yield {"a": 2, "$where": "1"}

    job = import_job("import_things", read=read_records, collection="things")
    result = run_import(folders, mongo, claim(folders, mongo), job=job)
    assert not result.success
    assert "record 1: field '$where' starts with '$'" in failure_text(result)
    assert mongo.collection("things").distinct("_src") == ["fine.jsonl"]
    assert os.path.exists(os.path.join(folders.error_folder(), "operators.jsonl"))


def test_the_archive_temps_a_crashed_run_left_are_removed_when_its_batch_runs_again(folders, mongo, monkeypatch):
    from core4_resources.files.names import hidden_temp_name

    originals = {n: sha256_file(put(folders.proc_folder(), n, csv_rows(3, tag=n))) for n in ("x.csv", "y.csv")}
    real = FolderResource.move_archive_many
    left: list[str] = []

    def crash_while_archiving(self, sources, *args, **kwargs):
        # What kill -9 leaves in the middle of gzipping into the archive: a hidden partial copy.
        folder = self._archive_folder_for(kwargs.get("base"), kwargs.get("run_id"), kwargs.get("started"))
        os.makedirs(folder, exist_ok=True)
        for source in sources:
            path = os.path.join(folder, hidden_temp_name(os.path.basename(source) + ".gz"))
            with open(path, "wb") as out:
                out.write(b"\x1f\x8b half a gzip")
            left.append(path)
        raise OSError(errno.EIO, "Input/output error (the run died here)")

    with dg.instance_for_test() as instance:
        (batch,) = claim_all(folders)
        monkeypatch.setattr(FolderResource, "move_archive_many", crash_while_archiving)
        first = run_import(folders, mongo, batch, instance=instance)
        assert not first.success and len(left) == 2 and all(os.path.exists(p) for p in left)
        monkeypatch.setattr(FolderResource, "move_archive_many", real)
        again = run_import(folders, mongo, batch, instance=instance)
        assert again.success
        assert not any(os.path.exists(p) for p in left)  # removed by the batch's next run, no sweep by hand
        assert "removed 2 hidden archive temp(s) that earlier runs left" in event_log_text(instance, again.run_id)
    assert hidden_files(folders.archive_folder()) == []
    for name, (path,) in archived(folders).items():
        assert content_sha256(path) == originals[name]
    assert mongo.collection("things").count_documents({}) == 6
