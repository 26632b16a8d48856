"""Readers: how a file becomes records (read_csv, read_jsonl). Streamed, so a huge file never sits in memory."""

from __future__ import annotations

import codecs
import csv
import json
from typing import Iterator

from core4_pipelines.errors import RecordError

# csv's own guard against one enormous field: reading stops with an error.
MAX_FIELD_BYTES = 1 << 20
# The longest physical line read (characters). csv takes whole lines from its
# input, so without this a 1 GB single-line file would be read into memory at once.
MAX_LINE_CHARS = 8 << 20


def _bounded_lines(handle, path: str) -> Iterator[str]:
    """The lines of ``handle``, each read with a size limit; RecordError for a longer one."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise RecordError(
                f"{path}: line {number} is longer than {MAX_LINE_CHARS} characters; "
                "not a line-oriented text file this reader accepts"
            )
        yield line


def _decode_error_position(path: str, encoding: str) -> tuple[int, int, int] | None:
    """(line, byte in that line, byte offset) of the first bytes that are not ``encoding``.

    The text reader decodes ahead in blocks, so it cannot tell the line itself;
    this reads the file once more in binary, streamed, only when that happened.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # exc.object is what the decoder held back from earlier blocks plus this one.
                offset = offset + len(block) - len(exc.object) + exc.start
                break
            offset += len(block)
        else:
            return None
    line, line_start, position = 1, 0, 0
    with open(path, "rb") as handle:
        while position < offset:
            block = handle.read(min(1 << 16, offset - position))
            line += block.count(b"\n")
            last = block.rfind(b"\n")
            if last >= 0:
                line_start = position + last + 1
            position += len(block)
    return line, offset - line_start + 1, offset


# Every first character int() or float() can accept (digits, sign, point, blanks, inf/nan).
_NUMBER_START = frozenset("0123456789+-. \t\n\r\f\viInN")


def convert_field(value: str):
    """Numbers become numbers; everything else stays text (empty stays "")."""
    if value == "" or value[0] not in _NUMBER_START:
        return value  # cheap exit: most text cannot parse as a number
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


# The first bytes of files that are not text: a CSV reader would call them "not utf-8".
_NOT_TEXT = (
    (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive", "extract it first (unzip)"),
    (b"PK\x05\x06", "an empty zip archive", "extract it first (unzip)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it first (unzstd)"),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
)
_BZIP2_BLOCK = b"1AY&SY"  # after "BZh" and the block size digit: "BZh" alone may be text


def _refuse_compressed(path: str) -> None:
    """RecordError when the file starts like compressed data or an archive, not text."""
    with open(path, "rb") as handle:
        start = handle.read(10)
    for magic, what, advice in _NOT_TEXT:
        if start.startswith(magic) and (magic != b"BZh" or start[4:10] == _BZIP2_BLOCK):
            raise RecordError(f"{path}: is {what}, not text; {advice}, or read it with a "
                              "reader that decompresses it")


# Candidates for the real delimiter when the header came out as one column.
_DELIMITERS = (",", ";", "\t", "|")


def _check_header(path: str, header: list[str], delimiter: str, line: int, rows) -> None:
    """RecordError for a header that cannot name the records' fields; ``rows`` are the rest."""
    if not any(name.strip() for name in header):
        for row in rows:
            if any(cell.strip() for cell in row):
                raise RecordError(f"{path}: line {line}: no header line: the first line is empty "
                                  f"or only whitespace (the text starts at line {rows.line_num})")
        raise RecordError(f"{path}: no header line: the file holds only whitespace")
    if len(set(header)) != len(header) or any(not name.strip() for name in header):
        raise RecordError(f"{path}: line {line}: header has empty or repeated column names")
    if len(header) == 1:
        counts = {d: header[0].count(d) for d in _DELIMITERS if d != delimiter}
        other = max(counts, key=counts.get)
        if counts[other]:
            raise RecordError(
                f"{path}: line {line}: header {header[0]!r} has one column; "
                f"is the file {other!r}-delimited? pass delimiter={other!r}, e.g. "
                f"import_job(..., read=functools.partial(read_csv, delimiter={other!r}))"
            )
    check_field_names(header, f"{path}: line {line}", what="column")


def check_field_names(record_keys, where: str, what: str = "field") -> None:
    """RecordError unless every key can be a MongoDB field name as it is.

    Refused: keys that are not strings or empty, that start with '$' (operators), or contain
    '.' (paths) or NUL. ``where`` starts the message, e.g. ``"a.csv: line 1"``; ``what``
    names a key in it ("field", "column").
    """
    for key in record_keys:
        if not isinstance(key, str):
            problem = "is not a string"
        elif not key:
            problem = "is empty"
        elif key.startswith("$"):
            problem = "starts with '$'"
        elif "." in key:
            problem = "contains '.'"
        elif "\x00" in key:
            problem = "contains a NUL character"
        else:
            continue
        raise RecordError(
            f"{where}: {what} {key!r} {problem}; MongoDB field names must be non-empty strings "
            "that do not start with '$' or contain '.' or NUL"
        )


class Record(dict):
    """A record as a reader yields it: a dict that also knows its ``line`` in the file
    (where a record model's refusal points the user)."""

    __slots__ = ("line",)


def _record(pairs, line: int) -> Record:
    record = Record(pairs)
    record.line = line
    return record


def read_csv(path: str, *, delimiter: str = ",", encoding: str = "utf-8") -> Iterator[dict]:
    """Records of a CSV file with a header line; strict about shape and encoding.

    A UTF-8 byte order mark is dropped. Raises :class:`RecordError` naming the line for a
    row with the wrong number of fields, bytes that are not ``encoding``, compressed data,
    a file with no header, a header that looks like another delimiter, or column names
    MongoDB cannot store (see :func:`check_field_names`).
    """
    csv.field_size_limit(MAX_FIELD_BYTES)
    # utf-8-sig reads plain UTF-8 too; it only drops a leading byte order mark.
    text_encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    line = 0
    try:
        _refuse_compressed(path)
        with open(path, newline="", encoding=text_encoding, errors="strict") as handle:
            reader = csv.reader(_bounded_lines(handle, path), delimiter=delimiter, strict=True)
            header = next(reader, None)
            line = reader.line_num
            if header is None:
                raise RecordError(f"{path}: empty file, expected a header line")
            _check_header(path, header, delimiter, line, reader)
            width = len(header)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise RecordError(
                        f"{path}: line {line}: expected {width} fields, got {len(row)}"
                    )
                yield _record(zip(header, map(convert_field, row)), line)
    except UnicodeDecodeError as exc:
        where = _decode_error_position(path, encoding)
        at = f"line {where[0]}, byte {where[1]} (offset {where[2]})" if where else f"after line {line}"
        raise RecordError(f"{path}: {at}: not {encoding} text ({exc.reason})") from exc
    except csv.Error as exc:
        raise RecordError(f"{path}: line {line + 1}: {exc}") from exc


def read_jsonl(path: str, *, encoding: str = "utf-8") -> Iterator[dict]:
    """Records of a JSON Lines file: one JSON object per line; blank lines are skipped.

    Raises :class:`RecordError` naming the line for a line that is not JSON or not an
    object, bytes that are not ``encoding``, compressed data, or keys MongoDB cannot
    store (see :func:`check_field_names`).
    """
    text_encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    line = 0
    try:
        _refuse_compressed(path)
        with open(path, encoding=text_encoding, errors="strict") as handle:
            for line, text in enumerate(_bounded_lines(handle, path), start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    raise RecordError(f"{path}: line {line}: not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise RecordError(f"{path}: line {line}: expected a JSON object, got {type(record).__name__}")
                check_field_names(record, f"{path}: line {line}")
                yield _record(record, line)
    except UnicodeDecodeError as exc:
        where = _decode_error_position(path, encoding)
        at = f"line {where[0]}, byte {where[1]} (offset {where[2]})" if where else f"after line {line}"
        raise RecordError(f"{path}: {at}: not {encoding} text ({exc.reason})") from exc
