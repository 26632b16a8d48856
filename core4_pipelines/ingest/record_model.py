"""A pydantic record model for an import: each record validated and converted by it.

``import_job(..., model=SaleRecord)``: a record the model refuses sends its file to the
error folder with the record, its line (when the reader knows it), the field and
pydantic's message. What the model returns is stored, converted to what BSON holds
(a ``date`` becomes a midnight ``datetime``, a ``Decimal`` a ``Decimal128``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from bson.decimal128 import Decimal128
from pydantic import BaseModel, ValidationError

from core4_pipelines.errors import RecordError

# A file with many bad records names the first few; the rest are counted.
MAX_PROBLEMS_SHOWN = 5

Converter = Callable[[Mapping[str, Any], int, str], dict[str, Any]]


def _bson_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, decimal.Decimal):
        return Decimal128(value)
    if isinstance(value, enum.Enum):
        return _bson_value(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _bson_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_bson_value(v) for v in value]
    return value


def _problem(error: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "(the record)"
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"field {field}: {error.get('msg', 'invalid')} (got {shown})"


def model_converter(model: Any) -> Converter:
    """The converter for ``model`` (a pydantic ``BaseModel`` subclass), or TypeError saying so."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"model must be a pydantic BaseModel subclass, got {model!r}")

    def convert(record: Mapping[str, Any], position: int, where: str) -> dict[str, Any]:
        try:
            validated = model.model_validate(dict(record))
        except ValidationError as exc:
            errors = exc.errors()
            line = getattr(record, "line", None)
            at = f"record {position + 1}" + (f" (line {line})" if line is not None else "")
            more = f"; and {len(errors) - MAX_PROBLEMS_SHOWN} more" if len(errors) > MAX_PROBLEMS_SHOWN else ""
            raise RecordError(
                f"{where}: {at} does not fit {model.__name__}: "
                + "; ".join(_problem(e) for e in errors[:MAX_PROBLEMS_SHOWN]) + more
            ) from None
        document = _bson_value(validated.model_dump())
        if "_id" in record and "_id" not in document:  # the reader's own _id survives the model
            document["_id"] = record["_id"]
        return document

    return convert
