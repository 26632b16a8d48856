"""What every reader shares: a file's bytes (decompressed by their magic bytes, a zip's members one
by one), its text (the encoding a byte order mark names), records that know their line, and the
checks MongoDB's field names need.

A reader is a function ``read(path, **options)`` yielding records (mappings). It may also yield a
:class:`BadRow` (a row that cannot be a record: the bad-row policy decides, ``bad_rows.py``) and a
:class:`ReadNote` (something the user should know, e.g. a header name it had to make up: a
warning in the run's log).
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import lzma
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.bad_rows import BadRow

__all__ = ["BadRow", "ReadNote", "Record", "check_field_names", "open_sources", "text_of"]

# The longest physical line read (characters). csv takes whole lines from its input, so
# without this a 1 GB single-line file would be read into memory at once.
MAX_LINE_CHARS = 8 << 20


@dataclass(frozen=True)
class ReadNote:
    """What a reader tells the user about a file it read (a warning in the run's log)."""

    text: str


class Record(dict):
    """A record as a reader yields it: a dict that also knows its ``line`` in the file (where a
    refusal points the user) and, for a member of a zip archive, its ``member`` name (the
    record's ``_src`` is ``<archive>/<member>``)."""

    __slots__ = ("line", "member")


def make_record(pairs, line: int, member: str | None = None) -> Record:
    record = Record(pairs)
    record.line, record.member = line, member
    return record


# -- bytes: compressed by magic bytes, zip members ----------------------------------------------

_BZIP2_BLOCK = b"1AY&SY"  # after "BZh" and the block size digit: "BZh" alone may be text
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def compression_of(start: bytes) -> str | None:
    """gzip, bzip2, xz, zstd or zip by a file's first bytes; None for anything else."""
    if start.startswith(b"\x1f\x8b"):
        return "gzip"
    if start.startswith(b"BZh") and start[4:10] == _BZIP2_BLOCK:
        return "bzip2"
    if start.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if start.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if start.startswith(_ZIP_MAGIC):
        return "zip"
    return None


def _decompressed(path: str, kind: str | None) -> BinaryIO:
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bzip2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zstd":
        try:
            import zstandard  # optional: not every installation has it
        except ImportError:
            raise RecordError(f"{path}: is zstd-compressed data; install the zstandard package to read it, "
                              "or decompress it first (unzstd)") from None
        return zstandard.open(path, "rb")
    return open(path, "rb")


def _sniff(path: str) -> str | None:
    with open(path, "rb") as handle:
        return compression_of(handle.read(10))


@contextlib.contextmanager
def _opened(opener):
    handle = opener()
    try:
        yield handle
    finally:
        handle.close()


def open_sources(path: str, *, unzip: bool = True) -> Iterator[tuple[str | None, callable]]:
    """The sources in a file: (member name or None, a function opening its bytes, decompressed).

    A gzip, bzip2, xz (or zstd, with the zstandard package) file is one source, read through its
    decompressor; a zip archive (``unzip``) is one source per file member, in the archive's
    order (folders and hidden names such as ``__MACOSX/`` left out). Any other file is itself.
    """
    kind = _sniff(path)
    if kind == "zip" and unzip:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise RecordError(f"{path}: not a readable zip archive ({exc})") from None
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir() and not _hidden_member(m.filename)]
            if not members:
                raise RecordError(f"{path}: the zip archive holds no file")
            for member in members:
                yield member.filename, (lambda m=member: archive.open(m))
        return
    yield None, (lambda: _decompressed(path, kind if kind != "zip" else None))


def _hidden_member(name: str) -> bool:
    return any(part.startswith((".", "__MACOSX")) for part in name.split("/"))


# -- text: the encoding, a byte order mark -------------------------------------------------------

# Longest first: UTF-32's little-endian mark starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_UNICODE = frozenset({"utf-8", "utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8-sig"})


def text_of(binary: BinaryIO, encoding: str) -> tuple[io.TextIOWrapper, str]:
    """(text stream, the encoding read) of ``binary``. With a Unicode ``encoding`` (the default
    utf-8) a byte order mark decides which one (UTF-8, UTF-16 or UTF-32, either byte order) and is
    dropped; another encoding is taken as given."""
    name = codecs.lookup(encoding).name
    buffered = binary if hasattr(binary, "peek") else io.BufferedReader(binary)
    if name in _UNICODE:
        start = buffered.peek(4)[:4]
        for bom, bom_encoding in _BOMS:
            if start.startswith(bom):
                buffered.read(len(bom))
                name = bom_encoding
                break
        else:
            if name in ("utf-16", "utf-32"):
                name += "-le"  # no mark: the common byte order
    text = io.TextIOWrapper(buffered, encoding=name, errors="strict", newline="")
    return text, name


def bounded_lines(handle, path: str) -> Iterator[str]:
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


def decode_error_position(opener, encoding: str) -> tuple[int, int, int] | None:
    """(line, byte in that line, byte offset) of the first bytes that are not ``encoding``.

    The text reader decodes ahead in blocks, so it cannot tell the line itself; this reads the
    (decompressed) bytes once more, streamed, only when that happened.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset, line, line_start = 0, 1, 0
    newline = "\n".encode(encoding)
    with _opened(opener) as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # exc.object is what the decoder held back from earlier blocks plus this one.
                bad = len(block) - len(exc.object) + exc.start
                before = block[:max(bad, 0)]
                line += before.count(newline)
                last = before.rfind(newline)
                if last >= 0:
                    line_start = offset + last + len(newline)
                offset += bad
                return line, offset - line_start + 1, offset
            line += block.count(newline)
            last = block.rfind(newline)
            if last >= 0:
                line_start = offset + last + len(newline)
            offset += len(block)
    return None


def not_text_error(path: str, where: tuple[int, int, int] | None, line: int, encoding: str,
                   exc: UnicodeDecodeError) -> RecordError:
    at = f"line {where[0]}, byte {where[1]} (offset {where[2]})" if where else f"after line {line}"
    return RecordError(f"{path}: {at}: not {encoding} text ({exc.reason})")


# -- records: field names, values --------------------------------------------------------------

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


def unique_names(names: list[str], where: str) -> tuple[list[str], list[str]]:
    """(names, notes): an empty name becomes ``column_<n>`` (its position), a repeated one
    ``<name>_<k>`` (its k-th occurrence), as spreadsheet tools do; each change is a note."""
    taken = set(n for n in names if n.strip())
    result, notes, seen = [], [], {}
    for position, name in enumerate(names, start=1):
        if not name.strip():
            new = f"column_{position}"
            while new in taken:
                new += "_"
            notes.append(f"{where}: column {position} has no name; named {new}")
        elif name in seen:
            seen[name] += 1
            new = f"{name}_{seen[name]}"
            while new in taken:
                new += "_"
            notes.append(f"{where}: column {position} repeats the name {name!r}; named {new}")
        else:
            seen[name] = 1
            new = name
        taken.add(new)
        result.append(new)
    return result, notes


def source_label(path: str, member: str | None) -> str:
    return path if member is None else f"{path}/{member}"
