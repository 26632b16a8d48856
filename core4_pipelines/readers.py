"""Readers: how a file becomes records. Streamed, so a huge file never sits in memory."""

from __future__ import annotations

import codecs
import csv
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


def read_csv(path: str, *, delimiter: str = ",", encoding: str = "utf-8") -> Iterator[dict]:
    """Records of a CSV file with a header line; strict about shape and encoding.

    Raises :class:`RecordError` naming the line for a row with the wrong number
    of fields, bytes that are not ``encoding``, or a file with no header.
    """
    csv.field_size_limit(MAX_FIELD_BYTES)
    line = 0
    try:
        with open(path, newline="", encoding=encoding, errors="strict") as handle:
            reader = csv.reader(_bounded_lines(handle, path), delimiter=delimiter, strict=True)
            header = next(reader, None)
            line = reader.line_num
            if not header:
                raise RecordError(f"{path}: empty file, expected a header line")
            if len(set(header)) != len(header) or any(not name for name in header):
                raise RecordError(f"{path}: line 1: header has empty or repeated column names")
            width = len(header)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise RecordError(
                        f"{path}: line {line}: expected {width} fields, got {len(row)}"
                    )
                yield {name: convert_field(value) for name, value in zip(header, row)}
    except UnicodeDecodeError as exc:
        where = _decode_error_position(path, encoding)
        at = f"line {where[0]}, byte {where[1]} (offset {where[2]})" if where else f"after line {line}"
        raise RecordError(f"{path}: {at}: not {encoding} text ({exc.reason})") from exc
    except csv.Error as exc:
        raise RecordError(f"{path}: line {line + 1}: {exc}") from exc
