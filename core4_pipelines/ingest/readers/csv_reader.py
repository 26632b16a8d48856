"""read_csv: records of a CSV file, streamed (a huge file never sits in memory)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers.inputs import (
    BadRow,
    ReadNote,
    bounded_lines,
    check_field_names,
    decode_error_position,
    make_record,
    not_text_error,
    open_sources,
    source_label,
    text_of,
    unique_names,
)
from core4_pipelines.ingest.readers.values import FieldOptions, field_options, fields_of, text_converter

# csv's own guard against one enormous field: reading stops with an error.
MAX_FIELD_BYTES = 1 << 20
# Candidates for the real delimiter when the header came out as one column.
_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str
    encoding: str
    skip_lines: int
    header: int | None
    columns: tuple[str, ...] | None
    fields: FieldOptions


def csv_options(where: str = "read_csv", *, delimiter: str = ",", encoding: str = "utf-8", skip_lines: int = 0,
                header: int | bool | str | None = 1, columns: Sequence[str] | None = None,
                null_values: Sequence[str] | None = None, empty_fields: str = "keep", types: str = "auto",
                dates: bool = False) -> CsvOptions:
    """read_csv's options checked: ValueError naming the option and what it takes."""
    import codecs

    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"{where}: delimiter must be one character, got {delimiter!r}")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"{where}: encoding {encoding!r} is not an encoding Python knows "
                         "(e.g. utf-8, utf-16, latin-1, cp1252)") from None
    if isinstance(skip_lines, bool) or not isinstance(skip_lines, int) or skip_lines < 0:
        raise ValueError(f"{where}: skip_lines must be a count of lines (0, 1, 2 ...), got {skip_lines!r}")
    if header is None or header is False or header == "none":
        header = None
    elif isinstance(header, bool) or not isinstance(header, int) or header < 1:
        raise ValueError(f"{where}: header must be the header's row number (1 = the first row) or none, "
                         f"got {header!r}")
    if columns is not None:
        if isinstance(columns, str) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError(f"{where}: columns must be a list of field names, got {columns!r}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"{where}: columns repeats a name: {list(columns)!r}")
        check_field_names(columns, f"{where}: columns", what="column")
        columns = tuple(columns)
    elif header is None:
        raise ValueError(f"{where}: header none needs columns: the field names, e.g. columns: [id, name]")
    fields = field_options(where, types=types, null_values=null_values, empty_fields=empty_fields, dates=dates)
    return CsvOptions(delimiter, encoding, skip_lines, header, columns, fields)


def _check_header(path: str, header: list[str], delimiter: str, line: int, rows) -> None:
    """RecordError for a header that cannot name the records' fields; ``rows`` are the rest."""
    if not any(name.strip() for name in header):
        for row in rows:
            if any(cell.strip() for cell in row):
                raise RecordError(f"{path}: line {line}: no header line: the first line is empty "
                                  f"or only whitespace (the text starts at line {rows.line_num}); "
                                  "skip_lines drops lines before the header")
        raise RecordError(f"{path}: no header line: the file holds only whitespace")
    if len(header) == 1:
        counts = {d: header[0].count(d) for d in _DELIMITERS if d != delimiter}
        other = max(counts, key=counts.get)
        if counts[other]:
            raise RecordError(
                f"{path}: line {line}: header {header[0]!r} has one column; "
                f"is the file {other!r}-delimited? set reader_options: {{delimiter: {other!r}}}, or "
                f"import_job(..., read=functools.partial(read_csv, delimiter={other!r}))"
            )


def read_csv(path: str, **options) -> Iterator[dict]:
    """Records of a CSV file (gzip, bzip2, xz or zip compressed, or not), streamed.

    Options (each checked, see :func:`csv_options`): ``delimiter`` (","), ``encoding``
    ("utf-8"; a byte order mark names UTF-8, UTF-16 or UTF-32 and wins), ``skip_lines`` (lines
    before the header, e.g. a title), ``header`` (the header's row number after them, 1; none
    when the file has no header: then ``columns`` names the fields), ``columns`` (the field
    names, replacing the header's), ``null_values`` (texts read as null, e.g. ["", "NA"]),
    ``empty_fields`` (keep | drop: leave out empty fields; a null stays), ``types`` (auto: numbers become
    numbers; text: every value stays text), ``dates`` (ISO dates and date-times become dates).

    An empty header name becomes ``column_<n>``, a repeated one ``<name>_<k>`` (a note in the
    run's log). A row with more or fewer fields than the header is a :class:`BadRow` (the
    import's bad-row policy decides). Raises :class:`RecordError` naming the line for bytes
    that are not the encoding, a file without a header, a header that looks like another
    delimiter, or column names MongoDB cannot store.
    """
    settings = csv_options(**options)
    csv.field_size_limit(MAX_FIELD_BYTES)
    for member, opener in open_sources(path):
        yield from _read_source(source_label(path, member), member, opener, settings)


def _read_source(shown: str, member: str | None, opener, settings: CsvOptions) -> Iterator:
    line = 0
    encoding = settings.encoding
    binary = opener()
    try:
        handle, encoding = text_of(binary, settings.encoding)
        lines = bounded_lines(handle, shown)
        skipped = sum(1 for _ in itertools.islice(lines, settings.skip_lines))
        reader = csv.reader(lines, delimiter=settings.delimiter, strict=True)

        def at(number: int) -> int:  # the file's line number of csv's line_num
            return number + skipped

        names: list[str] | None = None
        if settings.header is not None:
            for _ in range(settings.header - 1):
                if next(reader, None) is None:
                    break
            header = next(reader, None)
            line = at(reader.line_num)
            if header is None:
                raise RecordError(f"{shown}: empty file, expected a header line"
                                  + (f" after the {skipped + settings.header - 1} line(s) skipped"
                                     if skipped or settings.header > 1 else ""))
            if settings.columns is None:
                _check_header(shown, header, settings.delimiter, line, reader)
                names, notes = unique_names(header, f"{shown}: line {line}")
                for note in notes:
                    yield ReadNote(note)
                check_field_names(names, f"{shown}: line {line}", what="column")
        if names is None:
            names = list(settings.columns)
        width = len(names)
        convert = text_converter(settings.fields)
        drop_empty = settings.fields.empty_fields == "drop"
        for row in reader:
            line = at(reader.line_num)
            if not row:
                continue
            if len(row) != width:
                yield BadRow(f"line {line}", f"expected {width} fields, got {len(row)}", row)
                continue
            yield make_record(fields_of(names, map(convert, row), drop_empty), line, member)
    except UnicodeDecodeError as exc:
        raise not_text_error(shown, decode_error_position(opener, encoding), line, encoding, exc) from exc
    except csv.Error as exc:
        raise RecordError(f"{shown}: line {line + 1}: {exc}") from exc
    finally:
        binary.close()
