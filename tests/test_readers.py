"""The built-in readers on real files written here: CSV options (junk lines, headers, nulls,
empty fields, types, dates), byte order marks, ragged rows under the bad-row policy, Excel
workbooks, JSON arrays, Parquet, compressed files and zip archives -- read alone and through an
import run (the documents in MongoDB, the file archived)."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128
from support import archived, deliver, put

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers import json_reader
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import (
    BadRow,
    ReadNote,
    check_reader_options,
    read_csv,
    read_json,
    read_parquet,
    read_xlsx,
)


def records(items):
    return [dict(r) for r in items if not isinstance(r, (ReadNote, BadRow))]


def notes(items):
    return [r.text for r in items if isinstance(r, ReadNote)]


# --- csv: the options -------------------------------------------------------------------------

def test_junk_lines_before_the_header_are_skipped(tmp_path):
    path = put(tmp_path, "report.csv", "Sales report\nExported 2026-12-01\n\nday,n\n1,2\n")
    (record,) = read_csv(path, skip_lines=3)
    assert record == {"day": 1, "n": 2} and record.line == 5


def test_the_header_row_can_be_chosen_or_absent(tmp_path):
    path = put(tmp_path, "h.csv", "title,,\nday,n\n1,2\n")
    assert list(read_csv(path, header=2)) == [{"day": 1, "n": 2}]
    bare = put(tmp_path, "bare.csv", "1,2\n3,4\n")
    assert list(read_csv(bare, header="none", columns=["a", "b"])) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert list(read_csv(path, header=2, columns=["x", "y"])) == [{"x": 1, "y": 2}]
    with pytest.raises(ValueError, match="header none needs columns"):
        list(read_csv(bare, header=None))


def test_empty_and_repeated_header_names_are_named_with_a_note(tmp_path):
    path = put(tmp_path, "budget.csv", "item,amount,amount,\nrent,1,2,\n")
    items = list(read_csv(path))
    assert records(items) == [{"item": "rent", "amount": 1, "amount_2": 2, "column_4": ""}]
    assert notes(items) == [f"{path}: line 1: column 3 repeats the name 'amount'; named amount_2",
                            f"{path}: line 1: column 4 has no name; named column_4"]


def test_null_values_empty_fields_types_and_dates(tmp_path):
    path = put(tmp_path, "v.csv", "id,note,day,at\n007,NA,2026-12-01,2026-12-01T06:30:00\n8,,x,\n")
    assert list(read_csv(path, null_values=["NA"], empty_fields="drop", dates=True)) == [
        {"id": 7, "note": None, "day": datetime(2026, 12, 1), "at": datetime(2026, 12, 1, 6, 30)},
        {"id": 8, "day": "x"},
    ]
    assert list(read_csv(path, types="text")) == [
        {"id": "007", "note": "NA", "day": "2026-12-01", "at": "2026-12-01T06:30:00"},
        {"id": "8", "note": "", "day": "x", "at": ""},
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_byte_order_mark_names_the_encoding(tmp_path, encoding):
    text = "ort,n\nKöln,1\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    path = put(tmp_path, "bom.csv", data)
    assert list(read_csv(path)) == [{"ort": "Köln", "n": 1}]


def test_a_ragged_row_is_a_bad_row_not_the_end_of_the_file(tmp_path):
    path = put(tmp_path, "ragged.csv", "a,b\n1,2\n3\n4,5,6\n7,8\n")
    items = list(read_csv(path))
    assert records(items) == [{"a": 1, "b": 2}, {"a": 7, "b": 8}]
    bad = [r for r in items if isinstance(r, BadRow)]
    assert [(b.where, b.reason, b.data) for b in bad] == [
        ("line 3", "expected 2 fields, got 1", ["3"]), ("line 4", "expected 2 fields, got 3", ["4", "5", "6"])]


@pytest.mark.parametrize("options, key, words", [
    ({"skip_lines": -1}, "skip_lines", "a count of lines"),
    ({"header": 0}, "header", "row number"),
    ({"columns": "a,b"}, "columns", "a list of field names"),
    ({"null_values": "NA"}, "null_values", "a list of texts"),
    ({"empty_fields": "ignore"}, "empty_fields", "keep or drop"),
    ({"types": "numbers"}, "types", "auto or text"),
    ({"encoding": "klingon"}, "encoding", "not an encoding"),
    ({"sheet": "data"}, "sheet", "csv takes delimiter"),
])
def test_a_wrong_option_names_the_option(options, key, words):
    wrong = check_reader_options("csv", options)
    assert wrong is not None and wrong[0] == key and words in wrong[1]


# --- the bad-row policy on a CSV file, through an import -------------------------------------------

def test_ragged_rows_skipped_by_the_policy_import_the_rest(folders, mongo):
    job = import_job("import_things", read=read_csv, collection="things", project="demo", bad_rows="skip")
    result, metadata = deliver(folders, mongo, job, {"ragged.csv": "a,b\n1,2\n3\n4,5\n"})
    assert result.success and metadata["bad_rows"].value == 1
    assert sorted(d["a"] for d in mongo.collection("things").find()) == [1, 4]
    assert list(archived(folders)) == ["ragged.csv"]


def test_a_ragged_row_under_fail_rejects_the_file_naming_the_line(folders, mongo):
    job = import_job("import_things", read=read_csv, collection="things", project="demo")
    result, _ = deliver(folders, mongo, job, {"ragged.csv": "a,b\n1,2\n3\n"})
    assert not result.success
    with open(os.path.join(folders.error_folder(), "ragged.csv.reason.txt"), encoding="utf-8") as reason:
        assert "ragged.csv: line 3: expected 2 fields, got 1" in reason.read()
    assert mongo.collection("things").count_documents({}) == 0


# --- compressed files and zip archives ----------------------------------------------------------

@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gz", "bz2", "xz"])
def test_compressed_files_are_read_by_their_first_bytes(tmp_path, compress):
    path = put(tmp_path, "prices.csv.packed", compress(b"sku,price\na,1\nb,2\n"))
    assert list(read_csv(path)) == [{"sku": "a", "price": 1}, {"sku": "b", "price": 2}]
    jpath = put(tmp_path, "prices.json.packed", compress(b'[{"sku": "a"}, {"sku": "b"}]'))
    assert list(read_json(jpath)) == [{"sku": "a"}, {"sku": "b"}]


def test_each_member_of_a_zip_is_a_source_of_its_own(folders, mongo, tmp_path):
    path = str(tmp_path / "drop.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("north.csv", "sku,n\na,1\nb,2\n")
        archive.writestr("south/south.csv", "sku,n\nc,3\n")
        archive.writestr("__MACOSX/._north.csv", "junk")
    with open(path, "rb") as handle:
        content = handle.read()
    job = import_job("import_things", read=read_csv, collection="things", project="demo")
    result, _ = deliver(folders, mongo, job, {"drop.zip": content})
    assert result.success
    found = sorted((d["_src"], d["sku"]) for d in mongo.collection("things").find())
    assert found == [("drop.zip/north.csv", "a"), ("drop.zip/north.csv", "b"), ("drop.zip/south/south.csv", "c")]
    assert list(archived(folders)) == ["drop.zip"]


def test_replace_of_a_zip_replaces_what_every_member_gave(folders, mongo, tmp_path):
    job = import_job("import_things", read=read_csv, collection="things", project="demo", mode="replace")

    def zipped(members):
        path = str(tmp_path / "snap.zip")
        with zipfile.ZipFile(path, "w") as archive:
            for name, text in members.items():
                archive.writestr(name, text)
        with open(path, "rb") as handle:
            return handle.read()

    deliver(folders, mongo, job, {"snap.zip": zipped({"a.csv": "k\n1\n2\n", "b.csv": "k\n3\n"})})
    result, metadata = deliver(folders, mongo, job, {"snap.zip": zipped({"a.csv": "k\n9\n"})})
    assert result.success and metadata["deleted"].value == 3
    assert [(d["_src"], d["k"]) for d in mongo.collection("things").find()] == [("snap.zip/a.csv", 9)]


def test_a_million_row_gzip_csv_is_streamed_in_bounded_memory(tmp_path):
    path = tmp_path / "big.csv.gz"
    with gzip.open(path, "wt", compresslevel=1) as out:
        out.write("id,name,price\n")
        out.writelines(f"{i},item {i},{i}.5\n" for i in range(1_000_000))
    script = textwrap.dedent(f"""
        import resource
        from core4_pipelines.ingest.readers import read_csv
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = sum(1 for _ in read_csv({str(path)!r}))
        print(rows, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows, grown_mb = map(int, done.stdout.split())
    assert rows == 1_000_000
    assert grown_mb < 50, f"reading grew the process by {grown_mb} MB"  # the file is ~27 MB decompressed


# --- json -----------------------------------------------------------------------------------------

def test_a_json_array_is_read_element_by_element_with_lines(tmp_path, monkeypatch):
    elements = [{"id": i, "text": "x" * 5000} for i in range(100)]  # crosses many read blocks
    path = put(tmp_path, "a.json", "[\n" + ",\n".join(json.dumps(e) for e in elements) + "\n]\n")
    assert list(read_json(path)) == elements  # small: parsed at once
    monkeypatch.setattr(json_reader, "WHOLE_CHARS", 1000)  # as a file too large for that: streamed
    monkeypatch.setattr(json_reader, "_BLOCK", 4096)  # elements longer than a block, read on past it
    assert list(read_json(path)) == elements
    tricky = [{"id": i, "text": "}, {" * (i % 7) + "x" * (i * 37 % 3000), "inner": {"a": [1, {"b": "]"}]}}
              for i in range(300)]  # '}' followed by ',' inside strings and nested objects
    path = put(tmp_path, "b.json", "[" + ", ".join(json.dumps(e) for e in tricky) + "]")
    assert list(read_json(path)) == tricky


def test_a_large_json_array_is_streamed_in_bounded_memory(tmp_path):
    path = tmp_path / "big.json.gz"
    with gzip.open(path, "wt", compresslevel=1) as out:
        out.write("[\n" + ",\n".join(json.dumps({"id": i, "name": f"item {i}", "price": i + 0.5})
                                      for i in range(600_000)) + "\n]\n")
    # A streamed file holds the records of a block at a time (WHOLE_CHARS made small here, as for a
    # file larger than it): the ~30 MB of text and 600k dicts never sit in memory at once.
    script = textwrap.dedent(f"""
        import resource
        from core4_pipelines.ingest.readers import json_reader
        json_reader.WHOLE_CHARS = 1 << 20
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = sum(1 for _ in json_reader.read_json({str(path)!r}))
        print(rows, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows, grown_mb = map(int, done.stdout.split())
    assert rows == 600_000
    assert grown_mb < 50, f"reading grew the process by {grown_mb} MB"


def test_a_streamed_json_array_names_the_line_of_a_bad_element(tmp_path, monkeypatch):
    monkeypatch.setattr(json_reader, "WHOLE_CHARS", 1000)
    monkeypatch.setattr(json_reader, "_BLOCK", 4096)
    good = ",\n".join(json.dumps({"id": i, "text": "x" * 50}) for i in range(500))
    for bad, words in [('{"id": }', "line 502: not JSON"), ("7", "line 502: expected a JSON object, got int"),
                       ('{"$set": 1}', "line 502: field '\\$set' starts with '\\$'")]:
        with pytest.raises(RecordError, match=words):
            list(read_json(put(tmp_path, "bad.json", "[\n" + good + ",\n" + bad + ",\n" + good + "\n]")))


def test_one_json_object_is_one_record_and_bad_json_names_the_line(tmp_path):
    assert list(read_json(put(tmp_path, "one.json", ' {"a": 1} '))) == [{"a": 1}]
    assert list(read_json(put(tmp_path, "empty.json", "[ ]"))) == []
    for text, words in [('[{"a": 1},\n{"a": }]', "line 2: not JSON"), ('[{"a": 1}\n{"b": 2}]', "line 2: expected ','"),
                        ('[1]', "line 1: expected a JSON object, got int"), ("nothing", "expected a JSON array")]:
        with pytest.raises(RecordError, match=words):
            list(read_json(put(tmp_path, "bad.json", text)))


# --- xlsx -------------------------------------------------------------------------------------------

def workbook(path, sheets: dict[str, list[list]]) -> str:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return str(path)


def test_an_xlsx_sheet_by_name_or_position_with_types(tmp_path):
    path = workbook(tmp_path / "book.xlsx", {
        "notes": [["read me"], ["second sheet has the data"]],
        "data": [["sku", "price", "day", None], ["a", 10, datetime(2026, 12, 1), None], [None, None, None, None],
                 ["b", 2.5, None, None]],
    })
    expected = [{"sku": "a", "price": 10, "day": datetime(2026, 12, 1)}, {"sku": "b", "price": 2.5, "day": None}]
    assert list(read_xlsx(path, sheet="data")) == expected
    assert list(read_xlsx(path, sheet=2)) == expected
    assert [r.line for r in read_xlsx(path, sheet=2)] == [2, 4]  # the blank row 3 skipped
    assert list(read_xlsx(path, sheet=2, types="text"))[0] == {"sku": "a", "price": "10", "day": "2026-12-01T00:00:00"}
    with pytest.raises(RecordError, match="no sheet 'prices'; its sheets: notes, data"):
        list(read_xlsx(path, sheet="prices"))


def test_an_xlsx_through_an_import(folders, mongo, tmp_path):
    path = workbook(tmp_path / "w.xlsx", {"s": [["sku", "n"], ["a", 1], ["b", 2]]})
    with open(path, "rb") as handle:
        content = handle.read()
    job = import_job("import_things", read=read_xlsx, collection="things", project="demo")
    result, _ = deliver(folders, mongo, job, {"prices.xlsx": content})
    assert result.success
    assert sorted((d["sku"], d["n"], d["_src"]) for d in mongo.collection("things").find()) == [
        ("a", 1, "prices.xlsx"), ("b", 2, "prices.xlsx")]


# --- parquet ----------------------------------------------------------------------------------------

def test_parquet_row_groups_become_records_bson_can_hold(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": list(range(25_000)),
        "price": pa.array([Decimal("1.10")] * 25_000, type=pa.decimal128(5, 2)),
        "day": pa.array([dt.date(2026, 12, 1)] * 25_000),
    })
    path = str(tmp_path / "p.parquet")
    pq.write_table(table, path, row_group_size=7_000)
    found = list(read_parquet(path))
    assert len(found) == 25_000 and found[-1].line == 25_000
    assert found[0] == {"id": 0, "price": Decimal128("1.10"), "day": datetime(2026, 12, 1)}
    with pytest.raises(RecordError, match="not a Parquet file"):
        list(read_parquet(put(tmp_path, "no.parquet", "a,b\n")))
