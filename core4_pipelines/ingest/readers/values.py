"""Values of text fields: numbers, nulls, ISO dates -- the ``types``, ``null_values``, ``dates``
and ``empty_fields`` options every tabular reader (csv, xlsx) shares."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

TYPES = ("auto", "text")
EMPTY_FIELDS = ("keep", "drop")

# Every first character int() or float() can accept (digits, sign, point, blanks, inf/nan).
_NUMBER_START = frozenset("0123456789+-. \t\n\r\f\viInN")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?")


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


def convert_date(value):
    """An ISO 8601 date or date-time text as a datetime (a date at midnight); else the value."""
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and _ISO.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class FieldOptions:
    """How a reader turns a row's cells into fields (checked by :func:`field_options`)."""

    types: str = "auto"
    null_values: frozenset = field(default_factory=frozenset)
    empty_fields: str = "keep"
    dates: bool = False


def field_options(where: str, *, types: str = "auto", null_values: Sequence[str] | None = None,
                  empty_fields: str = "keep", dates: bool = False) -> FieldOptions:
    """The options checked; ValueError naming the option and what it takes."""
    if types not in TYPES:
        raise ValueError(f"{where}: types must be auto or text, got {types!r}")
    if empty_fields not in EMPTY_FIELDS:
        raise ValueError(f"{where}: empty_fields must be keep or drop, got {empty_fields!r}")
    if null_values is None:
        null_values = ()
    if isinstance(null_values, str) or not all(isinstance(v, str) for v in null_values):
        raise ValueError(f"{where}: null_values must be a list of texts, e.g. ['', 'NA'], got {null_values!r}")
    if not isinstance(dates, bool):
        raise ValueError(f"{where}: dates must be true or false, got {dates!r}")
    return FieldOptions(types, frozenset(null_values), empty_fields, dates)


def text_converter(options: FieldOptions) -> Callable[[str], Any]:
    """The function one text cell goes through under ``options``."""
    steps: list[Callable] = []
    if options.types == "auto":
        steps.append(convert_field)
    if options.dates:
        steps.append(convert_date)
    nulls = options.null_values
    if not steps and not nulls:
        return str
    if len(steps) == 1 and not nulls:
        return steps[0]

    def convert(value: str):
        if value in nulls:
            return None
        for step in steps:
            value = step(value)
        return value
    return convert


def cell_converter(options: FieldOptions) -> Callable[[Any], Any]:
    """The function one spreadsheet cell (a number, text, bool, date ...) goes through."""
    nulls = options.null_values
    text = options.types == "text"

    def convert(value):
        kind = type(value)  # the common types first: this runs once per cell
        if kind is str:
            if value == "" or value in nulls:
                return None  # an empty cell is no value
            return convert_date(value) if options.dates else value
        if kind is float:
            if value.is_integer() and abs(value) < 2 ** 53:
                value = int(value)  # a spreadsheet holds every number as a float
        elif value is None or kind is int or kind is bool:
            pass
        elif isinstance(value, datetime):
            pass
        elif isinstance(value, date):
            value = datetime(value.year, value.month, value.day)
        elif isinstance(value, time):
            value = value.isoformat()
        elif isinstance(value, timedelta):
            value = value.total_seconds()
        if text and value is not None:
            return value.isoformat() if isinstance(value, datetime) else str(value)
        return value
    return convert


def fields_of(names: Sequence[str], values: Iterable, drop_empty: bool, empty: Any = ""):
    """The (name, value) pairs of one row; ``drop_empty`` leaves out the ``empty`` ones (a CSV's
    empty text; a null read from ``null_values`` stays, it was asked for)."""
    pairs = zip(names, values)
    if drop_empty:
        return [(n, v) for n, v in pairs if v != empty]
    return pairs
