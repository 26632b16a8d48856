"""Import runs through Dagster against the real embedded MongoDB."""

from __future__ import annotations

import gzip
import os
import time

import dagster as dg
import pytest
from support import archived, claim_all, csv_rows, put, read, run_import

from core4_pipelines.ingest.claim import batch_root
from core4_pipelines.ingest.job import download_to_proc, import_job
from core4_pipelines.ingest.readers import read_csv


def test_batch_imported_stamped_and_archived(folders, mongo):
    contents = {"a.csv": csv_rows(3, "a"), "b.csv": csv_rows(2, "b")}
    for name, content in contents.items():
        put(folders.proc_folder(), name, content)
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id)
    assert result.success
    docs = list(mongo.collection("things").find({}, sort=[("_id", 1)]))
    assert len(docs) == 5
    assert {d["_src"] for d in docs} == {"a.csv", "b.csv"}
    assert {d["_job_id"] for d in docs} == {result.run_id}
    assert mongo.collection("things").find_one({"_src": "a.csv", "id": 2})["value"] == 1.0
    assert {name: gzip.decompress(read(path)) for name, (path,) in archived(folders).items()} == contents
    assert not os.path.exists(os.path.join(batch_root(folders.proc_folder()), batch_id))
    assert os.listdir(folders.proc_folder()) == [".batch"]
    # One materialization of the collection for the batch, its file table naming each file.
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert event.materialization.asset_key.path[-1] == "things"
    assert (metadata["files"].value, metadata["records"].value, metadata["batch"].value) == (2, 5, batch_id)
    table = {row.data["file"]: row.data for row in metadata["file_table"].value.records}
    assert {name: row["records"] for name, row in table.items()} == {"a.csv": 3, "b.csv": 2}
    assert all(result.run_id in row["moved_to"] and row["outcome"] == "imported" for row in table.values())


def test_reexecution_of_a_partly_imported_batch_does_not_duplicate(folders, mongo):
    put(folders.proc_folder(), "a.csv", csv_rows(50))
    put(folders.proc_folder(), "b.csv", csv_rows(40))
    (batch_id,) = claim_all(folders)
    # A first attempt that wrote a.csv's records and died before archiving anything:
    # simulate by running an import of only a.csv's records, leaving both files claimed.
    from core4_pipelines.ingest.job import _records_with_ids

    folder = os.path.join(batch_root(folders.proc_folder()), batch_id)
    mongo.insert_stamped(
        "things", _records_with_ids(read_csv, os.path.join(folder, "a.csv"), batch_id, "a.csv"),
        source="a.csv", job_id="crashed-run",
    )
    result = run_import(folders, mongo, batch_id)
    assert result.success
    assert mongo.collection("things").count_documents({}) == 90
    assert mongo.collection("things").count_documents({"_src": "a.csv"}) == 50
    # And once more: the batch is gone, nothing happens, nothing is duplicated.
    again = run_import(folders, mongo, batch_id)
    assert again.success
    assert mongo.collection("things").count_documents({}) == 90


def test_bad_file_goes_to_error_with_reason_and_the_others_are_imported(folders, mongo):
    put(folders.proc_folder(), "good.csv", csv_rows(3))
    put(folders.proc_folder(), "bad.csv", b"id,tag,value\n1,x,1\n2,x\n")
    put(folders.proc_folder(), "latin1.csv", "id,name\n1,M\xfcller\n".encode("latin-1"))
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id)
    assert not result.success
    failure = result.failure_data_for_node("import_things_batch")
    message = failure.error.message
    assert "bad.csv" in message and "line 3: expected 3 fields, got 2" in message
    assert "latin1.csv" in message and "utf-8" in message
    assert mongo.collection("things").distinct("_src") == ["good.csv"]
    error_dir = folders.error_folder()
    assert sorted(os.listdir(error_dir)) == ["bad.csv", "bad.csv.reason.txt", "latin1.csv", "latin1.csv.reason.txt"]
    with open(os.path.join(error_dir, "bad.csv.reason.txt")) as handle:
        assert "expected 3 fields" in handle.read()
    with open(os.path.join(error_dir, "bad.csv"), "rb") as handle:
        assert handle.read() == b"id,tag,value\n1,x,1\n2,x\n"
    assert set(archived(folders)) == {"good.csv"}


def test_reader_failing_midway_leaves_no_partial_records(folders, mongo):
    def read_then_fail(path):
        for i in range(2500):
            yield {"n": i}
        raise ValueError("broken trailer")

    job = import_job("import_broken", read=read_then_fail, collection="things")
    put(folders.proc_folder(), "x.dat", b"whatever")
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id, job=job)
    assert not result.success
    assert mongo.collection("things").count_documents({}) == 0
    assert "ValueError: broken trailer" in open(os.path.join(folders.error_folder(), "x.dat.reason.txt")).read()


def test_unreachable_mongo_fails_the_run_and_keeps_the_file_claimed(folders, mongo_server):
    from core4_resources.mongo.embedded.server import free_port
    from core4_resources.mongo.resource import MongoResource

    dead = MongoResource(mongo_url=f"mongodb://user:pw123@127.0.0.1:{free_port()}", database="x",
                         server_selection_timeout_ms=500)
    put(folders.proc_folder(), "a.csv", csv_rows(2))
    (batch_id,) = claim_all(folders)
    result = run_import(folders, dead, batch_id)
    assert not result.success
    text = str(result.failure_data_for_node("import_things_batch").error)
    assert "pw123" not in text and "127.0.0.1" in text
    folder = os.path.join(batch_root(folders.proc_folder()), batch_id)
    assert os.listdir(folder) == ["a.csv"]


def test_download_to_proc_goes_through_transfer(folders):
    path = download_to_proc(folders, "2024/x.csv", lambda out: out.write(b"a\n1\n"))
    assert path == os.path.join(folders.proc_folder(), "x.csv")
    assert open(path, "rb").read() == b"a\n1\n"
    leftovers = [n for _, _, names in os.walk(folders.transfer_folder()) for n in names]
    assert leftovers == []


def test_failed_download_leaves_nothing_visible(folders):
    def fail(out):
        out.write(b"half")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        download_to_proc(folders, "y.csv", fail)
    assert folders.list_transfer() == [] and folders.list_proc() == []
    assert [n for _, _, names in os.walk(folders.transfer_folder()) for n in names] == []


def test_a_second_run_of_a_batch_being_imported_is_refused(folders, mongo):
    import fcntl

    put(folders.proc_folder(), "a.csv", csv_rows(2))
    (batch_id,) = claim_all(folders)
    folder = os.path.join(batch_root(folders.proc_folder()), batch_id)
    held = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # the first run, still importing
        result = run_import(folders, mongo, batch_id)
    finally:
        os.close(held)
    assert not result.success
    assert "being imported by another run" in str(result.failure_data_for_node("import_things_batch").error)
    assert os.listdir(folder) == ["a.csv"]
    assert mongo.collection("things").count_documents({}) == 0


def test_an_import_beats_its_heartbeat_while_it_writes(folders, mongo):
    from core4_pipelines.supervise.runtime import HEARTBEAT_TAG

    put(folders.proc_folder(), "a.csv", csv_rows(3))
    (batch_id,) = claim_all(folders)
    with dg.instance_for_test() as instance:
        before = time.time()
        result = run_import(folders, mongo, batch_id, instance=instance)
        assert result.success
        beat = float(instance.get_run_by_id(result.run_id).tags[HEARTBEAT_TAG])
    assert before <= beat <= time.time()  # so the zombie monitor never flags an import that works
