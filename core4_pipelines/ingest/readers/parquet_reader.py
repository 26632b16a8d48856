"""read_parquet: records of a Parquet file, one row group batch at a time (pyarrow)."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator

from bson.decimal128 import Decimal128

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers.inputs import check_field_names, make_record

# Rows converted to dicts at once: bounded memory for any file size.
BATCH_ROWS = 10_000


def _bson_value(value):
    """Parquet values BSON has no type for, as the nearest one it has."""
    if isinstance(value, decimal.Decimal):
        return Decimal128(value)
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [_bson_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _bson_value(v) for k, v in value.items()}
    return value


def _needs_conversion(arrow_type) -> bool:
    import pyarrow as pa

    if pa.types.is_decimal(arrow_type) or pa.types.is_date(arrow_type) or pa.types.is_time(arrow_type) \
            or pa.types.is_duration(arrow_type):
        return True
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _needs_conversion(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return any(_needs_conversion(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    return pa.types.is_map(arrow_type)


def read_parquet(path: str) -> Iterator[dict]:
    """Records of a Parquet file, read in batches of BATCH_ROWS rows (any size, little memory).

    Decimals become BSON Decimal128, dates datetimes (midnight), times ISO texts, durations
    seconds. Raises :class:`RecordError` for a file that is not Parquet or column names
    MongoDB cannot store.
    """
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        parquet = pq.ParquetFile(path)
    except (ArrowException, OSError) as exc:
        raise RecordError(f"{path}: not a Parquet file pyarrow can read ({exc})") from None
    with parquet:
        schema = parquet.schema_arrow
        check_field_names(schema.names, f"{path}: schema", what="column")
        converted = [f.name for f in schema if _needs_conversion(f.type)]
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    for name in converted:
                        record[name] = _bson_value(record[name])
                    yield make_record(record, row)
        except ArrowException as exc:
            raise RecordError(f"{path}: row {row + 1}: cannot be read ({exc})") from None
