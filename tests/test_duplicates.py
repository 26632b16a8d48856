"""Duplicate deliveries: the file ledger knows every imported content; skip archives a repeat unimported."""

from __future__ import annotations

import gzip

import pytest
from support import deliver_batch as deliver, archived, read

from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.ledger import LEDGER_COLLECTION, Ledger, content_hash
from core4_pipelines.ingest.readers import read_csv

SKIP = import_job("import_things", read=read_csv, collection="things", duplicates="skip", project="demo")
IMPORT = import_job("import_things", read=read_csv, collection="things", project="demo")




def ledger(mongo, **match):
    return list(mongo.collection(LEDGER_COLLECTION).find(match, sort=[("at", 1), ("_id", 1)]))


def test_a_file_delivered_again_is_archived_with_a_note_and_not_imported(folders, mongo):
    first, first_batch, _ = deliver(folders, mongo, SKIP, {"day.csv": "id,v\n1,a\n2,b\n"})
    assert mongo.collection("things").count_documents({}) == 2
    again, _, metadata = deliver(folders, mongo, SKIP, {"day-again.csv": "id,v\n1,a\n2,b\n", "new.csv": "id,v\n3,c\n"})
    assert again.success
    assert mongo.collection("things").count_documents({}) == 3  # new.csv only
    assert metadata["files_duplicate"].value == 1 and metadata["records"].value == 1
    table = {row.data["file"]: row.data for row in metadata["file_table"].value.records}
    note = table["day-again.csv"]["reason"]
    assert table["day-again.csv"]["outcome"] == "duplicate" and "same content as day.csv" in note
    assert first.run_id in note
    (path,) = archived(folders)["day-again.csv"]
    assert gzip.decompress(read(path)) == b"id,v\n1,a\n2,b\n"  # archived all the same: nothing lost
    states = {e["name"]: e["state"] for e in ledger(mongo)}
    assert states == {"day.csv": "imported", "day-again.csv": "duplicate", "new.csv": "imported"}


def test_only_duplicates_in_a_batch_materialize_nothing(folders, mongo):
    deliver(folders, mongo, SKIP, {"a.csv": "id\n1\n"})
    result, _, metadata = deliver(folders, mongo, SKIP, {"b.csv": "id\n1\n"})
    assert result.success and metadata is None
    assert mongo.collection("things").count_documents({}) == 1


def test_the_same_content_twice_in_one_batch_is_imported_once(folders, mongo):
    result, _, metadata = deliver(folders, mongo, SKIP, {"a.csv": "id\n1\n", "b.csv": "id\n1\n"})
    assert result.success and mongo.collection("things").count_documents({}) == 1
    assert metadata["files_duplicate"].value == 1


def test_with_duplicates_import_a_repeat_is_imported_and_the_ledger_still_records_it(folders, mongo):
    deliver(folders, mongo, IMPORT, {"a.csv": "id\n1\n"})
    deliver(folders, mongo, IMPORT, {"a.csv": "id\n1\n"})
    assert mongo.collection("things").count_documents({}) == 2
    entries = ledger(mongo)
    assert [e["state"] for e in entries] == ["imported", "imported"]
    assert entries[0]["hash"] == entries[1]["hash"] and entries[0]["job"] == "demo.import_things"
    assert all(e["archive"] and e["records"] == 1 for e in entries)


def test_a_rejected_file_is_no_duplicate_of_anything(folders, mongo):
    bad = "id,v\n1,a\n2\n"  # a ragged row: rejected
    result, _, _ = deliver(folders, mongo, SKIP, {"bad.csv": bad})
    assert not result.success
    assert [e["state"] for e in ledger(mongo)] == ["rejected"]
    result, _, _ = deliver(folders, mongo, SKIP, {"bad-again.csv": bad})
    assert not result.success  # rejected again on its content, not archived as a duplicate
    assert "bad-again.csv" not in archived(folders)


def test_a_replay_lets_the_same_content_through_once(folders, mongo, tmp_path):
    deliver(folders, mongo, SKIP, {"a.csv": "id\n1\n"})
    (path,) = archived(folders)["a.csv"]
    source = tmp_path / "a.csv"
    source.write_bytes(gzip.decompress(read(path)))
    Ledger(mongo, "demo.import_things", "things").mark_replay(content_hash(str(source)), path)
    deliver(folders, mongo, SKIP, {"a.csv": "id\n1\n"})
    assert mongo.collection("things").count_documents({}) == 2  # imported again: the replay asked for it
    deliver(folders, mongo, SKIP, {"a.csv": "id\n1\n"})
    assert mongo.collection("things").count_documents({}) == 2  # once only


def test_a_wrong_duplicates_action_is_refused():
    with pytest.raises(ValueError, match=r"import_job\(x\): duplicates must be one of import, skip, got 'drop'"):
        import_job("x", read=read_csv, collection="things", duplicates="drop")
