"""read_jsonl: JSON Lines into records, with errors that name the file and the line."""

from __future__ import annotations

import gzip

import pytest

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers import read_jsonl


def test_objects_become_records_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"city": "berlin", "celsius": 21.5, "tags": ["a"]}\n\n{"city": "koeln", "celsius": 19}\n')
    assert list(read_jsonl(str(path))) == [{"city": "berlin", "celsius": 21.5, "tags": ["a"]},
                                           {"city": "koeln", "celsius": 19}]


@pytest.mark.parametrize("content, expected", [
    (b'{"a": 1}\n{"a": \n', r"b.jsonl: line 2: not JSON"),
    (b'{"a": 1}\n[1, 2]\n', r"b.jsonl: line 2: expected a JSON object, got list"),
    (b'{"$set": 1}\n', r"b.jsonl: line 1: field '\$set' starts with '\$'"),
    (b'{"a": "\xff"}\n', r"b.jsonl: line 1, byte 8 .*not utf-8 text"),
    (gzip.compress(b'{"a": 1}\n[1]\n', mtime=0), r"b.jsonl: line 2: expected a JSON object, got list"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, content, expected):
    path = tmp_path / "b.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=expected):
        list(read_jsonl(str(path)))


def test_another_encoding(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes('{"city": "köln"}\n'.encode("latin-1"))
    assert list(read_jsonl(str(path), encoding="latin-1")) == [{"city": "köln"}]
