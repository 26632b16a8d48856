"""A batch written as one stream of inserts keeps each file's fate of its own."""

from __future__ import annotations

import os

from support import STARTED, csv_rows, put

from core4_pipelines.ingest.write import finish_batch, write_batch_records
from core4_pipelines.ingest.readers import read_csv

BATCH = "20240101T000000-0123abcd"


def batch_of(folders, files: dict[str, bytes]) -> tuple[str, list[str]]:
    folder = os.path.join(folders.proc_folder(), ".batch", BATCH)
    return folder, [put(folder, name, content) for name, content in files.items()]


def write(paths, mongo, read=read_csv, run_id="run-1"):
    return write_batch_records(paths, read=read, collection="things", mongo=mongo, batch_id=BATCH, run_id=run_id)


def test_files_spanning_chunks_are_written_once_each_a_bad_one_removed_entirely(folders, mongo):
    # 700 records each: the 1,000-document chunks hold parts of two or three files.
    files = {f"f{i}.csv": csv_rows(700, tag=f"f{i}") for i in range(5)}
    folder, paths = batch_of(folders, files)

    def read_failing_late(path):
        for position, record in enumerate(read_csv(path)):
            if position == 650 and path.endswith("f2.csv"):
                raise ValueError("bad row 650")
            yield record

    outcomes = write(paths, mongo, read=read_failing_late)
    by_name = {o.name: o for o in outcomes}
    assert by_name["f2.csv"].error == "f2.csv: ValueError: bad row 650"
    things = mongo.collection("things")
    assert things.count_documents({"_src": "f2.csv"}) == 0  # its inserted part removed again
    for name in ("f0.csv", "f1.csv", "f3.csv", "f4.csv"):
        assert by_name[name].is_imported and by_name[name].records == 700
        ids = [d["id"] for d in things.find({"_src": name}, {"id": 1})]
        assert sorted(ids) == list(range(700)), name
        assert things.count_documents({"_src": name, "_job_id": "run-1"}) == 700
    # The same batch again (a retry): every record is already there, nothing twice.
    again = {o.name: o for o in write(paths, mongo, run_id="run-2")}
    assert all(o.is_imported and o.records == 700 for o in again.values())
    assert [again[n].duplicates for n in sorted(again)] == [700, 700, 0, 700, 700]
    assert things.count_documents({}) == 5 * 700


def test_a_value_bson_cannot_hold_rejects_only_its_file(folders, mongo):
    folder, paths = batch_of(folders, {"a.csv": csv_rows(30), "b.csv": csv_rows(30), "c.csv": csv_rows(30)})

    def read_with_an_unstorable_value(path):
        for position, record in enumerate(read_csv(path)):
            if path.endswith("b.csv") and position == 10:
                record = {**record, "value": object()}
            yield record

    outcomes = write(paths, mongo, read=read_with_an_unstorable_value)
    by_name = {o.name: o for o in outcomes}
    assert "cannot be stored as BSON" in by_name["b.csv"].error
    assert by_name["a.csv"].records == by_name["c.csv"].records == 30
    things = mongo.collection("things")
    assert sorted(things.distinct("_src")) == ["a.csv", "c.csv"] and things.count_documents({}) == 60
    folders._run_id, folders._run_started = "run-1", STARTED  # as in a run (setup_for_execution)
    finish_batch(outcomes, folder, folders, None)
    assert os.listdir(folder) == []  # a, c archived; b in the error folder with its reason
    assert sorted(os.listdir(folders.error_folder())) == ["b.csv", "b.csv.reason.txt"]


def test_a_file_gone_before_it_is_read_is_vanished_the_rest_imported(folders, mongo):
    folder, paths = batch_of(folders, {"a.csv": csv_rows(5), "b.csv": csv_rows(5)})
    os.unlink(paths[0])
    outcomes = write(paths, mongo)
    assert [(o.name, o.vanished, o.records) for o in outcomes] == [("a.csv", True, 0), ("b.csv", False, 5)]
