"""Arrow arrays and scalars built from Python and NumPy values without pyarrow's pandas check.

The first time pyarrow converts any Python or NumPy value (`pa.array`, `pa.scalar`, a plain
value handed to a compute function), it imports pandas to ask whether the value is a pandas
object: 0.14 s of one core, on `unitcost ingest`'s way to its first append. The ingest path
builds its few values from buffers here instead, and a test holds it to that
(`tests/test_arrow_values.py`): reports and exports that hand Arrow to pandas import it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

_EPOCH_DIVISOR = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}


def _validity(valid: np.ndarray) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of a mask of valid values (None when all are), and the null count."""
    nulls = int(len(valid) - np.count_nonzero(valid))
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def numbers(values: np.ndarray, type: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """A fixed-width numeric or temporal array (int64, float64, timestamp...) over the values'
    memory, as the NumPy dtype of the same width holds them; `valid` marks the non-nulls."""
    data = np.ascontiguousarray(values)
    if data.dtype.itemsize * 8 != type.bit_width:
        raise ValueError(f"{data.dtype} values cannot be the {type} Arrow type")
    bitmap, nulls = _validity(np.asarray(valid, dtype=bool)) if valid is not None else (None, 0)
    return pa.Array.from_buffers(type, len(data), [bitmap, pa.py_buffer(data)], null_count=nulls)


def booleans(values: np.ndarray) -> pa.Array:
    mask = np.asarray(values, dtype=bool)
    return pa.Array.from_buffers(
        pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))]
    )


def strings(values: Sequence[str | None]) -> pa.Array:
    """A `string` array of the values, None for a null."""
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    bitmap, nulls = _validity(valid)
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [bitmap, pa.py_buffer(offsets), data], null_count=nulls
    )


def string_scalar(value: str) -> pa.Scalar:
    return strings([value])[0]


def zero(type: pa.DataType) -> pa.Scalar:
    """The zero of a fixed-width numeric type, or false: what a null is filled with."""
    if pa.types.is_boolean(type):
        return booleans(np.zeros(1, dtype=bool))[0]
    return numbers(np.zeros(1, dtype=f"i{type.bit_width // 8}"), type)[0]


def timestamp_scalar(value: datetime, type: pa.TimestampType) -> pa.Scalar:
    """An aware datetime as a scalar of a timestamp type (microseconds or coarser)."""
    divisor = _EPOCH_DIVISOR[type.unit]
    if divisor is None or value.tzinfo is None:
        raise ValueError(f"{value!r} cannot be a {type} scalar here")
    since_epoch = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (since_epoch.days * 86_400 + since_epoch.seconds) * 1_000_000 + since_epoch.microseconds
    return numbers(np.asarray([micros // divisor], dtype=np.int64), type)[0]


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a fixed-width array with no nulls (integers, floats, booleans), as NumPy
    holds them: a view of the Arrow memory where there is one chunk and no bit packing."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    parts = [_chunk_to_numpy(chunk) for chunk in chunks]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, dtype=_dtype(values.type))
    return np.concatenate(parts)


def _dtype(type: pa.DataType) -> np.dtype:
    if pa.types.is_boolean(type):
        return np.dtype(bool)
    if pa.types.is_floating(type):
        return np.dtype(f"f{type.bit_width // 8}")
    if pa.types.is_unsigned_integer(type):
        return np.dtype(f"u{type.bit_width // 8}")
    if pa.types.is_integer(type) or pa.types.is_temporal(type):
        return np.dtype(f"i{type.bit_width // 8}")
    raise TypeError(f"{type} is not a fixed-width type")


def _chunk_to_numpy(chunk: pa.Array) -> np.ndarray:
    dtype = _dtype(chunk.type)
    if chunk.null_count:
        raise ValueError("fill the nulls of an array before taking its values")
    n, offset = len(chunk), chunk.offset
    data = chunk.buffers()[1]
    if n == 0 or data is None:
        return np.zeros(n, dtype=dtype)
    if dtype == np.dtype(bool):
        bits = np.frombuffer(data, dtype=np.uint8)
        return np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].astype(bool)
    return np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize)


def one_row(row: Mapping[str, object], schema: pa.Schema) -> pa.Table:
    """A one-row table of `schema` (string, integer and timestamp fields; None for a null)."""
    columns: list[pa.Array] = []
    for field in schema:
        value = row[field.name]
        if value is None:
            columns.append(pa.nulls(1, field.type))
        elif pa.types.is_string(field.type) and isinstance(value, str):
            columns.append(strings([value]))
        elif pa.types.is_timestamp(field.type) and isinstance(value, datetime):
            columns.append(pa.repeat(timestamp_scalar(value, field.type), 1))
        elif pa.types.is_integer(field.type) and isinstance(value, int) and not isinstance(value, bool):
            columns.append(numbers(np.asarray([value], dtype=_dtype(field.type)), field.type))
        else:
            raise TypeError(f"{field.name}: {value!r} cannot be a {field.type} value here")
    return pa.Table.from_arrays(columns, schema=schema)
