"""Bad inputs that used to pass silently or be explained badly: CSV files (a byte order mark,
only whitespace, the wrong delimiter, keys MongoDB cannot store, compressed data) and YAML
configuration (an alias bomb). Each is refused naming the file, the line and the column,
or read into the right documents."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
from support import archived, claim_all, put, run_import

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers import ReadNote, check_field_names, read_csv
from core4_resources.config import sources as config_sources
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError


def refusal(path: str, **options) -> str:
    with pytest.raises(RecordError) as info:
        list(read_csv(path, **options))
    return str(info.value)


# --- 1. a UTF-8 byte order mark --------------------------------------------------------------

def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = put(tmp_path, "bom.csv", b"\xef\xbb\xbfdate,amount\n2024-01-02,3\n")
    assert list(read_csv(path)) == [{"date": "2024-01-02", "amount": 3}]
    assert list(read_csv(path, encoding="UTF8")) == [{"date": "2024-01-02", "amount": 3}]


def test_other_encodings_are_read_as_given(tmp_path):
    path = put(tmp_path, "latin.csv", "ort,n\nKöln,1\n".encode("latin-1"))
    assert list(read_csv(path, encoding="latin-1")) == [{"ort": "Köln", "n": 1}]
    # A BOM under latin-1 is three latin-1 characters: the encoding the caller chose decides.
    bom = put(tmp_path, "bom-latin.csv", b"\xef\xbb\xbfa\n1\n")
    assert list(read_csv(bom, encoding="latin-1")) == [{"\xef\xbb\xbfa": 1}]


def test_a_bad_byte_after_a_byte_order_mark_is_still_located(tmp_path):
    path = put(tmp_path, "bom-bad.csv", b"\xef\xbb\xbfid,city\n1,K\xf6ln\n")
    assert refusal(path) == f"{path}: line 2, byte 4 (offset 14): not utf-8 text (invalid start byte)"


# --- 2. no header: empty or only whitespace ---------------------------------------------------

@pytest.mark.parametrize("content", [b"   \n  ", b"\n\n\n", b" \t \r\n \r\n"])
def test_a_file_of_only_whitespace_is_refused(tmp_path, content):
    path = put(tmp_path, "blank.csv", content)
    assert refusal(path) == f"{path}: no header line: the file holds only whitespace"


def test_a_blank_first_line_before_the_header_is_refused_with_where_the_text_starts(tmp_path):
    path = put(tmp_path, "late.csv", b"\n   \ndate,n\n1,2\n")
    assert refusal(path) == (f"{path}: line 1: no header line: the first line is empty or only "
                             "whitespace (the text starts at line 3); skip_lines drops lines before the header")
    assert list(read_csv(path, skip_lines=2)) == [{"date": 1, "n": 2}]


def test_a_blank_column_name_is_named_by_its_position_and_said(tmp_path):
    path = put(tmp_path, "blank-column.csv", b"date,  ,n\n1,2,3\n")
    note, record = list(read_csv(path))
    assert isinstance(note, ReadNote) and note.text == f"{path}: line 1: column 2 has no name; named column_2"
    assert record == {"date": 1, "column_2": 2, "n": 3}


def test_an_empty_file_and_a_bare_byte_order_mark_say_empty(tmp_path):
    for name, content in [("empty.csv", b""), ("bom-only.csv", b"\xef\xbb\xbf")]:
        path = put(tmp_path, name, content)
        assert refusal(path) == f"{path}: empty file, expected a header line"


# --- 3. another delimiter ----------------------------------------------------------------------

@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_file_with_another_delimiter_is_refused_with_the_option_to_pass(tmp_path, delimiter):
    text = f"date{delimiter}store{delimiter}amount\n2024-01-02{delimiter}a{delimiter}3\n"
    path = put(tmp_path, "other.csv", text.encode())
    message = refusal(path)
    header = repr(f"date{delimiter}store{delimiter}amount")
    assert message.startswith(
        f"{path}: line 1: header {header} has one column; is the file {delimiter!r}-delimited? "
        f"set reader_options: {{delimiter: {delimiter!r}}}"
    ), message
    assert list(read_csv(path, delimiter=delimiter)) == [{"date": "2024-01-02", "store": "a", "amount": 3}]


def test_a_comma_file_read_with_semicolons_is_refused_too(tmp_path):
    path = put(tmp_path, "comma.csv", b"date,store\n1,2\n")
    assert "is the file ','-delimited? set reader_options: {delimiter: ','}" in refusal(path, delimiter=";")


def test_a_single_column_file_still_imports(tmp_path):
    path = put(tmp_path, "single.csv", b"name\nalice\nbob\n\n")
    assert list(read_csv(path)) == [{"name": "alice"}, {"name": "bob"}]


# --- 4. column names MongoDB cannot store ------------------------------------------------------

@pytest.mark.parametrize("column, problem", [
    ("$set", "starts with '$'"),
    ("a.b", "contains '.'"),
    ("a\x00b", "contains a NUL character"),
])
def test_column_names_mongodb_cannot_store_are_refused(tmp_path, column, problem):
    path = put(tmp_path, "keys.csv", f"date,{column}\n1,2\n".encode())
    assert refusal(path).startswith(f"{path}: line 1: column {column!r} {problem}; MongoDB field names")


def test_values_with_dollars_dots_and_nul_stay_values(tmp_path):
    path = put(tmp_path, "values.csv", b"price,ratio,note,label\n$5.00,3.5,a\x00b,x.y\n")
    assert list(read_csv(path)) == [{"price": "$5.00", "ratio": 3.5, "note": "a\x00b", "label": "x.y"}]


def test_check_field_names_for_records_of_any_reader():
    check_field_names(["_id", "date", "a$b", "ünï"], "x.json: record 3")
    for key, problem in [(7, "is not a string"), ("", "is empty"), ("$x", "starts with '$'")]:
        with pytest.raises(RecordError) as info:
            check_field_names(["ok", key], "x.json: record 3")
        assert str(info.value).startswith(f"x.json: record 3: field {key!r} {problem}; ")


# --- 5. compressed data under a text name --------------------------------------------------------

def test_gzip_data_named_csv_is_read_decompressed_whatever_its_name(tmp_path):
    path = put(tmp_path, "sales.csv", gzip.compress(b"date,n\n1,2\n"))
    assert list(read_csv(path)) == [{"date": 1, "n": 2}]
    # whatever the encoding: latin-1 would otherwise decode it into garbage records
    assert list(read_csv(path, encoding="latin-1")) == [{"date": 1, "n": 2}]


def test_a_zip_archive_named_csv_is_read_member_by_member(tmp_path):
    path = tmp_path / "sales.csv"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sales.csv", "date,n\n1,2\n")
    (record,) = read_csv(str(path))
    assert record == {"date": 1, "n": 2} and record.member == "sales.csv"


def test_text_that_merely_starts_like_bzip2_is_read(tmp_path):
    path = put(tmp_path, "bz.csv", b"BZh,n\n1,2\n")
    assert list(read_csv(path)) == [{"BZh": 1, "n": 2}]


# --- the same through an import run: the right documents, the rest in the error folder ------------

def test_an_import_of_bad_inputs_stores_the_right_documents_and_explains_the_rest(folders, mongo):
    files = {
        "bom.csv": b"\xef\xbb\xbfdate,amount\n2024-01-02,3\n2024-01-03,4\n",
        "single.csv": b"name\nalice\n",
        "blank.csv": b"   \n  ",
        "semicolon.csv": b"date;store;amount\n2024-01-02;a;3\n",
        "dollar.csv": b"date,$where\n1,2\n",
        "packed.csv": gzip.compress(b"date,n\n1,2\n"),
    }
    for name, content in files.items():
        put(folders.proc_folder(), name, content)
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id)
    assert not result.success
    things = mongo.collection("things")
    docs = {d["_src"]: d for d in things.find({}, {"_id": 0, "_job_id": 0, "_batch": 0})}
    assert sorted(docs) == ["bom.csv", "packed.csv", "single.csv"]
    assert things.count_documents({"_src": "bom.csv", "date": {"$exists": True}}) == 2
    assert things.count_documents({"\ufeffdate": {"$exists": True}}) == 0
    assert set(archived(folders)) == {"bom.csv", "packed.csv", "single.csv"}
    reasons = {
        "blank.csv": "no header line: the file holds only whitespace",
        "semicolon.csv": "line 1: header 'date;store;amount' has one column; is the file ';'-delimited?",
        "dollar.csv": "line 1: column '$where' starts with '$'",
    }
    for name, expected in reasons.items():
        path = os.path.join(folders.error_folder(), name)
        with open(path, "rb") as data, open(path + ".reason.txt", encoding="utf-8") as reason:
            assert data.read() == files[name]
            assert expected in reason.read()


# --- 6. YAML alias bombs in the configuration ----------------------------------------------------

def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases to the level before."""
    lines = ["  l0: &l0 [" + ",".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * width) + "]")
    # Outside any section, and as a value whose wrong type is printed in the error message.
    return "bomb:\n" + "\n".join(lines) + f"\njob:\n  attempts: *l{levels - 1}\n"


LOAD_BOUNDED = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from core4_resources.config.settings import load_config
start = time.monotonic()
try:
    load_config()
    message = "loaded"
except BaseException as exc:
    message = f"{type(exc).__name__}: {exc}"
print(json.dumps({"seconds": time.monotonic() - start, "message": message}))
""".replace("import resource", "import json, resource")


def test_a_yaml_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    bomb = alias_bomb()
    assert len(bomb) < 500
    path = tmp_path / "local.yaml"
    path.write_text(bomb)
    env = {**os.environ, "CORE4_CONFIG": str(path)}
    # A child with 1 GiB of address space: before the fix this was a MemoryError after a
    # minute (3 GB without the limit); the timeout keeps a regression from hanging the suite.
    done = subprocess.run([sys.executable, "-c", LOAD_BOUNDED], capture_output=True, text=True,
                          env=env, timeout=60)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["message"] == (
        f"ConfigError: invalid YAML in {path} line 3 column 12: YAML aliases (*name) expand this "
        f"document to more than {config_sources.MAX_YAML_EXPANDED} values; refused"
    ), outcome
    assert outcome["seconds"] < 2, outcome


def test_more_than_100_yaml_aliases_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "local.yaml"
    path.write_text("x:\n  one: &one 1\n" + "".join(f"  k{i}: *one\n" for i in range(101)))
    monkeypatch.setenv("CORE4_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == (f"invalid YAML in {path} line 3 column 7: uses 101 YAML aliases "
                               "(*name); more than 100 is refused")


def test_an_alias_to_its_own_container_is_refused(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("loop: &loop\n  again: *loop\n")
    with pytest.raises(ConfigError) as info:
        load_config("demo", project_yaml=path)
    assert str(info.value).startswith(f"invalid YAML in {path} line 1 column 7: a YAML alias refers "
                                      "to a node that contains it")


def test_yaml_nested_thousands_deep_is_a_configuration_error(tmp_path, monkeypatch):
    path = tmp_path / "local.yaml"
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    monkeypatch.setenv("CORE4_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == f"invalid YAML in {path} nested too deeply to read (thousands of levels); refused"


def test_ordinary_aliases_and_merge_keys_still_load(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(textwrap.dedent("""\
        base: &base {retries: 2, tags: [a, b]}
        nightly: &nightly
          <<: *base
          hour: 3
        weekly:
          <<: *nightly
          day: sun
        """))
    settings = load_config("demo", project_yaml=path)
    flat = settings.flat()
    assert flat["demo.weekly.retries"] == 2 and flat["demo.weekly.hour"] == 3
    assert flat["demo.weekly.tags"] == ["a", "b"]
