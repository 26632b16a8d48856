"""The bad-row policy: skip or divert a file's bad rows, counted; past max_bad_rows the file is rejected whole."""

from __future__ import annotations

import json
import os

import dagster as dg
import pydantic
import pytest
from support import deliver, archived

from core4_pipelines.ingest.bad_rows import BadRow
from core4_pipelines.ingest.job import import_job


def rows_with_bad(path):
    """Records from 'good,<n>' lines, a BadRow for any other line: a reader's way to say 'not this row'."""
    with open(path) as handle:
        for line_no, line in enumerate(handle, 1):
            kind, _, value = line.strip().partition(",")
            if kind == "good":
                yield {"n": int(value)}
            else:
                yield BadRow(f"line {line_no}", "2 fields expected", line.strip())


def job(**options):
    return import_job("import_things", read=rows_with_bad, collection="things", project="demo", **options)




def check_of(result, name="no_bad_rows"):
    (evaluation,) = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                     and e.asset_check_evaluation_data.check_name == name]
    return evaluation


def error_files(folders):
    folder = folders.error_folder()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_skip_imports_the_good_rows_and_counts_the_bad_ones(folders, mongo):
    result, metadata = deliver(folders, mongo, job(bad_rows="skip"), {"a.txt": "good,1\nbad\ngood,2\ngood,3\n"})
    assert result.success
    assert sorted(d["n"] for d in mongo.collection("things").find()) == [1, 2, 3]
    assert metadata["bad_rows"].value == 1 and metadata["records"].value == 3
    (row,) = metadata["file_table"].value.records
    assert "1 bad rows skipped: line 2: 2 fields expected" in row.data["reason"]
    check = check_of(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["bad_rows"].value == 1
    assert "a.txt" in archived(folders) and error_files(folders) == []


def test_divert_writes_each_bad_row_with_its_place_and_reason_beside_a_reason_file(folders, mongo):
    result, _ = deliver(folders, mongo, job(bad_rows="divert"), {"a.txt": "good,1\nbad one\ngood,2\nworse\n"})
    assert result.success and mongo.collection("things").count_documents({}) == 2
    assert error_files(folders) == ["a.txt.rejected.jsonl", "a.txt.rejected.jsonl.reason.txt"]
    lines = [json.loads(line) for line in open(os.path.join(folders.error_folder(), "a.txt.rejected.jsonl"))]
    assert [(d["where"], d["reason"], d["row"]) for d in lines] == [
        ("line 2", "2 fields expected", "bad one"), ("line 4", "2 fields expected", "worse")]
    reason = open(os.path.join(folders.error_folder(), "a.txt.rejected.jsonl.reason.txt")).read()
    assert "2 bad rows of a.txt" in reason and "2 records were imported" in reason
    assert "a.txt" in archived(folders)
    assert os.listdir(os.path.join(folders.root, "temp")) == []  # the diverted rows' temp folder is gone


def test_more_bad_rows_than_max_bad_rows_reject_the_file_whole(folders, mongo):
    result, _ = deliver(folders, mongo, job(bad_rows="divert", max_bad_rows=1),
                        {"a.txt": "good,1\nbad\ngood,2\nbad\n", "b.txt": "good,9\n"})
    assert not result.success
    assert [d["n"] for d in mongo.collection("things").find()] == [9]  # nothing of a.txt
    assert error_files(folders) == ["a.txt", "a.txt.reason.txt"]  # no diverted rows of a rejected file
    reason = open(os.path.join(folders.error_folder(), "a.txt.reason.txt")).read()
    assert "2 of 4 rows are bad, more than max_bad_rows (1)" in reason


def test_a_fraction_of_the_rows_may_be_bad(folders, mongo):
    result, _ = deliver(folders, mongo, job(bad_rows="skip", max_bad_rows=0.5), {"a.txt": "good,1\nbad\ngood,2\ngood,3\n"})
    assert result.success and mongo.collection("things").count_documents({}) == 3
    result, _ = deliver(folders, mongo, job(bad_rows="skip", max_bad_rows=0.25), {"b.txt": "good,1\nbad\nbad\ngood,3\n"})
    assert not result.success and mongo.collection("things").count_documents({"_src": "b.txt"}) == 0


def test_with_fail_one_bad_row_rejects_the_file_as_before(folders, mongo):
    result, _ = deliver(folders, mongo, job(), {"a.txt": "good,1\nbad\n"})
    assert not result.success and mongo.collection("things").count_documents({}) == 0
    reason = open(os.path.join(folders.error_folder(), "a.txt.reason.txt")).read()
    assert "a.txt: line 2: 2 fields expected" in reason


class Reading(pydantic.BaseModel):
    n: int
    celsius: float = pydantic.Field(lt=60)


def test_a_record_the_model_refuses_is_a_bad_row(folders, mongo):
    def read(path):
        return [{"n": 1, "celsius": 20}, {"n": 2, "celsius": 120}, {"n": 3, "celsius": 21}]

    the_job = import_job("import_things", read=read, collection="things", model=Reading, bad_rows="skip")
    result, metadata = deliver(folders, mongo, the_job, {"a.txt": "x"})
    assert result.success and sorted(d["n"] for d in mongo.collection("things").find()) == [1, 3]
    (row,) = metadata["file_table"].value.records
    assert "record 2" in row.data["reason"] and "does not fit Reading" in row.data["reason"]


@pytest.mark.parametrize("held", [10, 1])
def test_in_upsert_a_record_without_its_keys_is_a_bad_row(folders, mongo, monkeypatch, held):
    from core4_pipelines.ingest import modes

    monkeypatch.setattr(modes, "MAX_HELD_RECORDS", held)  # 1: read twice, the bad rows counted once

    def read(path):
        return [{"sku": "a", "p": 1}, {"p": 2}, {"sku": "b", "p": 3}]

    the_job = import_job("import_things", read=read, collection="things", mode="upsert", keys=["sku"],
                         bad_rows="skip")
    result, metadata = deliver(folders, mongo, the_job, {"a.txt": "x"})
    assert result.success and sorted(d["sku"] for d in mongo.collection("things").find()) == ["a", "b"]
    assert metadata["bad_rows"].value == 1 and metadata["inserted"].value == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"bad_rows": "drop"}, "bad_rows must be one of fail, skip, divert, got 'drop'"),
    ({"bad_rows": "skip", "max_bad_rows": 1.5}, "max_bad_rows must be a count"),
    ({"bad_rows": "skip", "max_bad_rows": -1}, "max_bad_rows must be a count"),
    ({"max_bad_rows": 3}, "max_bad_rows is for bad_rows skip or divert"),
])
def test_a_wrong_bad_rows_setting_is_refused_when_the_job_is_built(options, message):
    with pytest.raises(ValueError, match=rf"import_job\(import_things\): {message}"):
        job(**options)
