"""Readers: how a file becomes records. Each is streamed (a huge file never sits in memory) and
reads gzip, bzip2 and xz compressed files by their first bytes; the text readers also read each
member of a zip archive (``_src`` ``<archive>/<member>``).

``csv`` (read_csv), ``jsonl`` (read_jsonl), ``json`` (read_json: an array of objects or one
object), ``xlsx`` (read_xlsx: one sheet of a workbook), ``parquet`` (read_parquet). A reader of
one's own is any function ``read(path, **options)`` yielding mappings (and, where a row cannot
be a record, a :class:`BadRow`; to tell the user something, a :class:`ReadNote`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core4_pipelines.ingest.readers.csv_reader import MAX_FIELD_BYTES, csv_options, read_csv
from core4_pipelines.ingest.readers.inputs import (
    MAX_LINE_CHARS,
    BadRow,
    ReadNote,
    Record,
    check_field_names,
    open_sources,
)
from core4_pipelines.ingest.readers.json_reader import read_json, read_jsonl
from core4_pipelines.ingest.readers.parquet_reader import read_parquet
from core4_pipelines.ingest.readers.values import convert_date, convert_field
from core4_pipelines.ingest.readers.xlsx_reader import read_xlsx, xlsx_options

__all__ = [
    "MAX_FIELD_BYTES", "MAX_LINE_CHARS", "READERS", "READER_OPTIONS", "BadRow", "ReadNote", "Record",
    "check_field_names", "check_reader_options", "convert_date", "convert_field", "open_sources",
    "read_csv", "read_json", "read_jsonl", "read_parquet", "read_xlsx",
]

READERS: dict[str, Callable[..., Any]] = {
    "csv": read_csv, "jsonl": read_jsonl, "json": read_json, "xlsx": read_xlsx, "parquet": read_parquet,
}
# The options each built-in reader takes.
READER_OPTIONS: dict[str, tuple[str, ...]] = {
    "csv": ("delimiter", "encoding", "skip_lines", "header", "columns", "null_values", "empty_fields",
            "types", "dates"),
    "jsonl": ("encoding",),
    "json": ("encoding",),
    "xlsx": ("sheet", "header", "columns", "null_values", "empty_fields", "types", "dates"),
    "parquet": (),
}


def check_reader_options(reader: str, options: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """(the option at fault or None, what is wrong) for ``options`` of a built-in ``reader``;
    None when they are right."""
    allowed = READER_OPTIONS[reader]
    for key in options:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no options"
            return key, f"{reader} takes {takes}; not {key}"
    checks = {"csv": csv_options, "xlsx": xlsx_options}
    try:
        if reader in checks:
            checks[reader](reader, **options)
        elif "encoding" in options:
            csv_options(reader, encoding=options["encoding"])
    except ValueError as exc:
        message = str(exc).removeprefix(f"{reader}: ")
        key = message.split(" ", 1)[0]
        return (key if key in allowed else None), message
    return None
