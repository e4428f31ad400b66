"""The fast path of the checks: type well-formed records cheaply, flag everything else.

Almost every record in a real file is well-formed, and naming the exact problem of a bad
record is expensive. So checking runs in two tiers:

1. this module types each field with the cheapest expression that is right *for a
   well-formed value* (`TRY_CAST(text AS BIGINT)` for a token count) and computes a
   `_suspect` flag that is true whenever the value might not be well-formed (the text is
   not the canonical spelling of the integer it cast to, a count is out of range, ...);
2. suspect records alone go through `normalise.build_sql`, the authoritative checks,
   which accept them with the same typed values or reject them with a precise reason.

The flag may over-approximate (an escaped string is suspect, then accepted); it must
never miss a bad record. A property test holds the two tiers to exactly that.

JSON lines usually arrive already typed by the quick parse (`quickjson`, source types
`PARSED ...`): there the line's shape has vouched for each value, and what remains here
is defaults, the few limits the shape does not encode, and the rules across fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ..events import FIELDS, Field
from ..money import MONEY_SCALE
from .normalise import (
    EARLIEST,
    FUTURE_SKEW,
    MAX_LATENCY_MS,
    MAX_TEXT,
    _default_sql,
    _int_limits,
    _lit,
    _Source,
    _usage_checks,
)
from .quickjson import PARSED, field_within_limits

SUSPECT_COLUMN = "_suspect"


def _string_fast(col: str, kind: str, f: Field) -> tuple[str, str]:
    if kind == "json":
        # A plain JSON string: quoted, no escapes. Anything else is left to the full checks.
        value = f"(CASE WHEN left({col}, 1) = '\"' THEN substr({col}, 2, length({col}) - 2) END)"
        suspect = f"({col} IS NOT NULL AND (left({col}, 1) <> '\"' OR strpos({col}, '\\') > 0))"
    elif kind == "text":
        value, suspect = f"trim({col})", "false"
    else:
        value, suspect = f"CAST({col} AS VARCHAR)", "false"
    value = f"NULLIF({value}, '')"
    if f.choices:
        value = f"upper({value})" if all(c.isupper() for c in f.choices) else f"lower({value})"
    return value, suspect


def _int_fast(col: str, kind: str) -> tuple[str, str]:
    if kind in ("json", "text"):
        text = f"trim({col})" if kind == "text" else col
        text = f"NULLIF({text}, '')"
        # The canonical spelling of an integer is the only one accepted without a closer look.
        return (
            f"TRY_CAST({text} AS BIGINT)",
            f"({text} IS NOT NULL AND CAST(TRY_CAST({text} AS BIGINT) AS VARCHAR) IS DISTINCT FROM {text})",
        )
    if kind == "integer":
        # An unsigned 64-bit column may hold what BIGINT cannot (2**64 - 1 from an underflow):
        # such a value goes the careful way and is rejected there, never fails the chunk.
        return f"TRY_CAST({col} AS BIGINT)", f"({col} IS NOT NULL AND TRY_CAST({col} AS BIGINT) IS NULL)"
    return "CAST(NULL AS BIGINT)", f"({col} IS NOT NULL)"


def _float_fast(col: str, kind: str) -> tuple[str, str]:
    if kind in ("json", "text"):
        text = f"NULLIF(trim({col}), '')" if kind == "text" else col
        value = f"TRY_CAST({text} AS DOUBLE)"
        shape = (
            f" OR NOT regexp_full_match({text}, '\\s*[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?\\s*')"
            if kind == "text"
            else ""
        )
        return value, f"({text} IS NOT NULL AND ({value} IS NULL OR NOT isfinite({value}){shape}))"
    if kind in ("integer", "float"):
        return f"CAST({col} AS DOUBLE)", f"({col} IS NOT NULL AND NOT isfinite(CAST({col} AS DOUBLE)))"
    return "CAST(NULL AS DOUBLE)", f"({col} IS NOT NULL)"


def _bool_fast(col: str, kind: str) -> tuple[str, str]:
    if kind == "json":
        return (
            f"(CASE {col} WHEN 'true' THEN true WHEN 'false' THEN false END)",
            f"({col} IS NOT NULL AND {col} NOT IN ('true', 'false'))",
        )
    if kind == "text":
        t = f"lower(NULLIF(trim({col}), ''))"
        return (
            f"(CASE WHEN {t} IN ('true', 't', '1', 'yes', 'y') THEN true "
            f"WHEN {t} IN ('false', 'f', '0', 'no', 'n') THEN false END)",
            f"({t} IS NOT NULL AND {t} NOT IN ('true', 't', '1', 'yes', 'y', 'false', 'f', '0', 'no', 'n'))",
        )
    if kind == "bool":
        return col, "false"
    return "CAST(NULL AS BOOLEAN)", f"({col} IS NOT NULL)"


def _ts_fast(col: str, kind: str, now: datetime) -> tuple[str, str]:
    if kind == "json":
        value = (
            f"(CASE WHEN left({col}, 1) = '\"' AND strpos({col}, '\\') = 0 "
            f"THEN TRY_CAST(substr({col}, 2, length({col}) - 2) AS TIMESTAMPTZ) END)"
        )
    elif kind == "text":
        value = f"TRY_CAST(NULLIF(trim({col}), '') AS TIMESTAMPTZ)"
    elif kind == "ts":
        value = f"CAST({col} AS TIMESTAMPTZ)"
    else:
        return "CAST(NULL AS TIMESTAMPTZ)", "true"
    limit = _lit((now + FUTURE_SKEW).isoformat())
    earliest = _lit(EARLIEST.isoformat())
    # A missing or unparsed timestamp is suspect: it may be epoch seconds, or an error to name.
    return value, (f"({value} IS NULL OR {value} > TIMESTAMPTZ {limit} OR {value} < TIMESTAMPTZ {earliest})")


def _money_fast(col: str, kind: str) -> tuple[str, str]:
    dec = f"DECIMAL(18, {MONEY_SCALE})"
    if kind == "json":
        value = (
            f"(CASE WHEN left({col}, 1) IN ('-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9') "
            f"THEN TRY_CAST({col} AS {dec}) END)"
        )
    elif kind == "text":
        value = f"TRY_CAST(NULLIF(trim({col}), '') AS {dec})"
    elif kind in ("integer", "float"):
        value = f"TRY_CAST({col} AS {dec})"
    else:
        return f"CAST(NULL AS {dec})", f"({col} IS NOT NULL)"
    return value, f"({col} IS NOT NULL AND ({value} IS NULL OR {value} < 0))"


def _kind(src: _Source) -> str:
    if src.type.startswith(PARSED):
        return "parsed"
    if src.is_json:
        return "json"
    if src.is_text:
        return "text"
    if src.is_integer:
        return "integer"
    if src.is_float:
        return "float"
    if src.type == "BOOLEAN":
        return "bool"
    if src.type.startswith("TIMESTAMP"):
        return "ts"
    return "other"


def build_fast_sql(
    relation: str,
    source_types: Mapping[str, str],
    *,
    now: datetime | None = None,
    tag_columns: Sequence[str] = (),
    pre_error: bool = False,
    unknown_column: str | None = None,
) -> str:
    """SQL typing `relation` cheaply into EVENT_SCHEMA columns plus `_row` and `_suspect`."""
    from .normalise import _tags

    now = now or datetime.now(UTC)
    values: list[str] = []
    suspects: list[str] = []
    long_texts: list[str] = []
    for f in FIELDS:
        src = _Source(f.name, source_types[f.name], renamed=False) if f.name in source_types else None
        if src is not None and _kind(src) == "parsed":
            value, suspect = _parsed_fast(f, src.col, now)
            if f.kind == "str" and not f.choices:
                long_texts.append(f"strlen({value})")
        elif f.kind == "map":
            value, _error = _tags(src, tag_columns)
            if src is not None and _kind(src) in ("json", "text"):
                present = f"NULLIF(trim({src.col}), '')"
                suspects.append(
                    f"({present} IS NOT NULL AND NOT (left({present}, 1) = '{{' AND json_valid({present})))"
                )
            elif src is not None and not (src.type.startswith("MAP") or src.type.startswith("STRUCT")):
                suspects.append(f"({src.col} IS NOT NULL)")
            values.append(f'{value} AS "{f.name}"')
            continue
        elif src is None:
            values.append(f'{_default_sql(f)} AS "{f.name}"')
            if f.required:
                suspects.append("true")
            continue
        else:
            value, suspect = _field_fast(f, src, now)
        if f.default is not None:
            value = f"COALESCE({value}, {_default_sql(f)})"
        elif f.required:
            suspects.append(f"({value}) IS NULL")
        values.append(f'{value} AS "{f.name}"')
        if suspect != "false":
            # NULL-safe: an absent optional value must not make its record suspect.
            suspects.append(f"COALESCE({suspect}, false)")
    if long_texts:
        # No text is longer than its line: on a short line (almost all), no text is too long.
        suspects.append(
            f"(CASE WHEN strlen(_line) > {MAX_TEXT} "
            f"THEN COALESCE(greatest({', '.join(long_texts)}) > {MAX_TEXT}, false) ELSE false END)"
        )
    passthrough = ["_row"]
    if long_texts:
        passthrough.append("_line")
    if pre_error:
        passthrough.append("_pre_error")
        suspects.append("_pre_error IS NOT NULL")
    if unknown_column:
        passthrough.append(unknown_column)
        suspects.append(f"{unknown_column} IS NOT NULL")
    row_checks = " OR ".join(f"({condition})" for _, condition, _ in _usage_checks())
    columns = ", ".join(f'"{f.name}"' for f in FIELDS)
    return (
        f"WITH typed AS (SELECT {', '.join(passthrough)}, {', '.join(values)}, "
        f"COALESCE({' OR '.join(suspects)}, true) AS _field_suspect FROM {relation}) "
        f"SELECT _row, {columns}, COALESCE(_field_suspect OR {row_checks}, true) AS {SUSPECT_COLUMN} FROM typed"
    )


def _field_fast(f: Field, src: _Source, now: datetime) -> tuple[str, str]:
    """The value and suspect flag of a field of any raw kind but `parsed`."""
    kind = _kind(src)
    col = src.col
    if f.kind in ("tokens", "count", "int"):
        value, suspect = _int_fast(col, kind)
        low, high, _ = _int_limits(f)
        suspect = f"({suspect} OR {value} < {low} OR {value} > {high})"
    elif f.kind == "float":
        value, suspect = _float_fast(col, kind)
        suspect = f"({suspect} OR {value} < 0 OR {value} > {MAX_LATENCY_MS})"
    elif f.kind == "bool":
        value, suspect = _bool_fast(col, kind)
    elif f.kind == "ts":
        value, suspect = _ts_fast(col, kind, now)
    elif f.kind == "money":
        value, suspect = _money_fast(col, kind)
    else:
        value, suspect = _string_fast(col, kind, f)
        # Bytes bound characters from above: a long multi-byte text is merely flagged.
        checks = [suspect, f"strlen({value}) > {MAX_TEXT}"]
        if f.choices:
            checks.append(f"{value} NOT IN ({', '.join(_lit(c) for c in f.choices)})")
        suspect = "(" + " OR ".join(checks) + ")"
    return value, suspect


def _parsed_fast(f: Field, col: str, now: datetime) -> tuple[str, str]:
    """A field json_transform already typed, on a line whose shape `quickjson` checks: the shape
    rules out every value the conversion would get wrong, and most values out of range."""
    if f.kind in ("tokens", "count", "int"):
        low, high, _ = _int_limits(f)
        return col, "false" if field_within_limits(f) else f"({col} < {low} OR {col} > {high})"
    if f.kind == "float":
        return col, f"({col} > {MAX_LATENCY_MS})"
    if f.kind == "bool":
        return col, "false"
    if f.kind == "ts":
        return _ts_fast(col, "ts", now)
    if f.kind == "money":
        return _money_fast(col, "json")
    if f.kind == "map":
        # The shape has no null among the tags, which the checks would drop.
        return f"COALESCE({col}, {_default_sql(f)})", "false"
    if f.choices:
        return col, "false"  # the shape lets through only the choices, spelt as they are
    return f"NULLIF({col}, '')", "false"
