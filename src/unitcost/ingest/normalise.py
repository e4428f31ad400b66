"""Check and type raw records in bulk, with one precise error per bad record.

Every source (JSON lines, CSV, Parquet, Python dicts) arrives as a table of raw values:
JSON values, text, or already-typed columns. One SQL statement, generated from the
event schema, types every field, applies every rule and names the first problem of each
record as `field` + `reason`. It runs in an in-memory DuckDB, so checking a million
records costs about as much as reading them, and a bad record never stops the good
records beside it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from ..events import (
    COST_COLUMNS,
    FIELDS,
    MAX_COUNT,
    MAX_TOKENS,
    PRICED_FIELDS,
    Field,
)
from ..money import MONEY_SCALE

SEP = "\x1f"
ERROR_COLUMN = "_error"
ROW_COLUMN = "_row"

KNOWN_FIELDS: frozenset[str] = frozenset(f.name for f in FIELDS)
# Columns of unitcost's own exports: accepted on input and recomputed, so an export can be re-ingested.
IGNORED_FIELDS: frozenset[str] = frozenset({*COST_COLUMNS, *(f.name for f in PRICED_FIELDS)})
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE_SKEW = timedelta(minutes=5)
MAX_TEXT = 1024
MAX_LATENCY_MS = 86_400_000

_INT_LIMITS: Mapping[str, tuple[int, int, str]] = {
    "http_status": (100, 599, "an HTTP status between 100 and 599"),
    "attempt": (1, 1000, "an attempt number between 1 and 1000"),
}


@dataclass(frozen=True)
class Rejection:
    record: int
    """Line number for line-oriented files, row number for tables, position for Python records."""
    field: str
    reason: str

    def __str__(self) -> str:
        return f"record {self.record}: {self.field}: {self.reason}"


def suggest_field(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(KNOWN_FIELDS), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --------------------------------------------------------------------------- typing rules


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reason(field: str, expr: str) -> str:
    return f"{_lit(field + SEP)} || {expr}"


def _shown(expr: str) -> str:
    """A value quoted for an error message, cut to 60 characters."""
    return f"'\"' || left(CAST({expr} AS VARCHAR), 60) || '\"'"


class _Source:
    """A raw column and the helper columns computed from it in the first stages of the checks.

    The raw column holds a JSON value's text ('json'), plain text ('text', e.g. CSV), or a
    typed value (a DuckDB type name, e.g. Parquet). Helper columns are computed once per
    record so every rule can refer to them by name instead of repeating expressions.
    """

    def __init__(self, column: str, source_type: str, *, renamed: bool = True) -> None:
        self.name = column
        self.source_col = f'"{column}"'
        # Inside the checks the raw column is renamed, so the typed value can take the field's name.
        self.col = f'"_r_{column}"' if renamed else self.source_col
        self.type = source_type.upper()
        self.kind = f'"_k_{column}"'  # JSON kind: VARCHAR, NUMBER, BOOLEAN, OBJECT, ARRAY, NULL
        self.text = f'"_t_{column}"'  # the value as text (JSON strings unquoted)
        self.num = f'"_n_{column}"'  # the text when it spells a number, else NULL
        self.dbl = f'"_d_{column}"'  # that number as a DOUBLE

    @property
    def is_json(self) -> bool:
        return self.type == "JSON"

    @property
    def is_text(self) -> bool:
        return self.type in ("TEXT", "VARCHAR")

    @property
    def is_integer(self) -> bool:
        return self.type in (
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "HUGEINT",
            "UHUGEINT",
        )

    @property
    def is_float(self) -> bool:
        return self.type in ("FLOAT", "DOUBLE", "REAL") or self.type.startswith("DECIMAL")

    def stage1(self) -> list[str]:
        """Kind and text helper columns, from the raw column alone."""
        col = self.col
        if self.is_json:
            kind = (
                f"CASE left({col}, 1) WHEN '\"' THEN 'VARCHAR' WHEN '{{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY' "
                f"WHEN 't' THEN 'BOOLEAN' WHEN 'f' THEN 'BOOLEAN' WHEN 'n' THEN 'NULL' ELSE 'NUMBER' END"
            )
            # Strings unquoted; unescaped by the JSON parser only when they hold a backslash.
            text = (
                f"CASE WHEN left({col}, 1) = '\"' THEN (CASE WHEN strpos({col}, '\\') > 0 "
                f"THEN json_extract_string(CAST({col} AS JSON), '$') ELSE substr({col}, 2, length({col}) - 2) END) "
                f"ELSE {col} END"
            )
            return [f"{kind} AS {self.kind}", f"{text} AS {self.text}"]
        if self.is_text:
            return [f"NULLIF(trim({col}), '') AS {self.text}"]
        return [f"CAST({col} AS VARCHAR) AS {self.text}"]

    def stage2(self) -> list[str]:
        """Number helper columns (for numeric fields)."""
        if self.is_json:
            num = f"CASE WHEN {self.kind} = 'NUMBER' THEN {self.col} END"
        elif self.is_text:
            num = f"CASE WHEN regexp_full_match({self.text}, {_NUMBER_RE}) THEN {self.text} END"
        elif self.is_integer or self.is_float:
            num = self.text
        else:
            num = "CAST(NULL AS VARCHAR)"
        return [f"{num} AS {self.num}", f"TRY_CAST({self.num} AS DOUBLE) AS {self.dbl}"]


_NUMBER_RE = r"'\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*'"
_NUMERIC_KINDS = ("tokens", "count", "int", "float", "money", "ts")


def _json_kind_error(src: _Source, allowed: Sequence[str], expected: str) -> str:
    allowed_sql = ", ".join(_lit(a) for a in allowed)
    return (
        f"CASE WHEN {src.col} IS NOT NULL AND {src.kind} NOT IN ({allowed_sql}) THEN "
        f"'expected {expected}, got ' || CASE {src.kind} WHEN 'VARCHAR' THEN 'a string ' || "
        f"{_shown(src.text)} WHEN 'OBJECT' THEN 'an object' WHEN 'ARRAY' THEN 'a list' "
        f"WHEN 'BOOLEAN' THEN {src.col} WHEN 'NUMBER' THEN 'a number ' || {src.col} "
        f"ELSE lower({src.kind}) END END"
    )


def _number_error(src: _Source) -> str:
    """Why a numeric field's raw value is not a number at all (NULL when it is one, or absent)."""
    if src.is_json:
        return _json_kind_error(src, ("NUMBER", "NULL"), "a number")
    if src.is_text:
        t = src.text
        return (
            f"CASE WHEN {t} IS NOT NULL AND {src.num} IS NULL THEN "
            f"CASE WHEN lower({t}) IN ('nan', '+nan', '-nan') THEN 'NaN is not a number' "
            f"WHEN lower({t}) IN ('inf', '+inf', '-inf', 'infinity', '-infinity') THEN 'infinite' "
            f"ELSE 'not a number: ' || {_shown(t)} END END"
        )
    if src.is_integer or src.is_float:
        return "NULL"
    return f"CASE WHEN {src.col} IS NOT NULL THEN 'expected a number, got {src.type.lower()}' END"


def _integer(src: _Source, f: Field) -> tuple[str, str]:
    num, dbl = src.num, src.dbl
    # An integer literal survives a round trip through BIGINT; anything else (12.0, 1e3, 012) is
    # accepted only as a number that is whole.
    value = (
        f"(CASE WHEN CAST(TRY_CAST({num} AS BIGINT) AS VARCHAR) = {num} THEN TRY_CAST({num} AS BIGINT) "
        f"WHEN isfinite({dbl}) AND {dbl} = floor({dbl}) AND abs({dbl}) < 9.2e18 THEN CAST({dbl} AS BIGINT) END)"
    )
    low, high, what = _int_limits(f)
    v = f'"_v_{f.name}"'
    error = (
        f"COALESCE({_number_error(src)}, CASE "
        f"WHEN {num} IS NULL THEN NULL "
        f"WHEN isnan({dbl}) THEN 'NaN is not a number' "
        f"WHEN NOT isfinite({dbl}) THEN 'infinite' "
        f"WHEN {v} IS NULL AND {dbl} <> floor({dbl}) THEN 'not an integer: ' || {num} "
        f"WHEN {v} IS NULL AND {dbl} < 0 THEN {_lit('must be ' + what + ', got ')} || {num} "
        # Beyond the BIGINT range (a UINT64 column's wrapped-around -1, say): over any limit.
        f"WHEN {v} IS NULL OR {v} > {high} THEN {_lit(_too_big(f, high, what))} || {num} "
        f"WHEN {v} < {low} THEN {_lit('must be ' + what + ', got ')} || {num} "
        f"END)"
    )
    return value, error


def _int_limits(f: Field) -> tuple[int, int, str]:
    if f.kind == "tokens":
        return 0, MAX_TOKENS, "a non-negative integer"
    if f.kind == "count":
        return 0, MAX_COUNT, "a non-negative integer"
    return _INT_LIMITS.get(f.name, (0, 2**62, "a non-negative integer"))


def _too_big(f: Field, high: int, what: str) -> str:
    if f.kind == "tokens":
        return f"absurd token count (over {high:,} in one call): "
    if f.kind == "count":
        return f"absurd count (over {high:,} in one call): "
    return f"must be {what}, got "


def _float(src: _Source, f: Field) -> tuple[str, str]:
    num, dbl = src.num, src.dbl
    error = (
        f"COALESCE({_number_error(src)}, CASE WHEN {num} IS NULL THEN NULL "
        f"WHEN isnan({dbl}) THEN 'NaN is not a number' WHEN NOT isfinite({dbl}) THEN 'infinite' "
        f"WHEN {dbl} < 0 THEN 'must not be negative, got ' || {num} "
        f"WHEN {dbl} > {MAX_LATENCY_MS} THEN 'absurd duration (over a day): ' || {num} END)"
    )
    return f"(CASE WHEN isfinite({dbl}) THEN {dbl} END)", error


def _money(src: _Source, f: Field) -> tuple[str, str]:
    dec = f"DECIMAL(18, {MONEY_SCALE})"
    if src.is_json:
        text = f"(CASE WHEN {src.kind} = 'NUMBER' THEN {src.col} WHEN {src.kind} = 'VARCHAR' THEN {src.text} END)"
        kind_error = _json_kind_error(src, ("NUMBER", "VARCHAR", "NULL"), "an amount")
    elif src.is_text or src.is_integer or src.is_float:
        text, kind_error = src.text, "NULL"
    else:
        return (
            "NULL",
            f"CASE WHEN {src.col} IS NOT NULL THEN 'expected an amount, got {src.type.lower()}' END",
        )
    value = f"COALESCE(TRY_CAST({text} AS {dec}), TRY_CAST(TRY_CAST({text} AS DOUBLE) AS {dec}))"
    v = f'"_v_{f.name}"'
    error = (
        f"COALESCE({kind_error}, CASE WHEN {text} IS NULL THEN NULL "
        f"WHEN isnan(TRY_CAST({text} AS DOUBLE)) THEN 'NaN is not an amount' "
        f"WHEN {v} IS NULL THEN 'not an amount in USD: ' || {_shown(text)} "
        f"WHEN {v} < 0 THEN 'must not be negative, got ' || {text} END)"
    )
    return value, error


def _boolean(src: _Source, f: Field) -> tuple[str, str]:
    if src.is_json:
        value = (
            f"(CASE WHEN {src.col} IN ('true', 'false') THEN {src.col} = 'true' "
            f"WHEN {src.col} IN ('0', '1') THEN {src.col} = '1' END)"
        )
        error = (
            f"CASE WHEN {src.col} IS NOT NULL AND {value} IS NULL THEN 'expected true or false, got ' || "
            f"{_shown(src.text)} END"
        )
    elif src.is_text:
        t = f"lower({src.text})"
        value = (
            f"(CASE WHEN {t} IN ('true', 't', '1', 'yes', 'y') THEN true "
            f"WHEN {t} IN ('false', 'f', '0', 'no', 'n') THEN false END)"
        )
        error = f"CASE WHEN {t} IS NOT NULL AND {value} IS NULL THEN 'expected true or false, got ' || {_shown(t)} END"
    elif src.type == "BOOLEAN":
        value, error = src.col, "NULL"
    elif src.is_integer:
        value = f"(CASE WHEN {src.col} IN (0, 1) THEN {src.col} = 1 END)"
        error = f"CASE WHEN {src.col} IS NOT NULL AND {value} IS NULL THEN 'expected true or false' END"
    else:
        value, error = "NULL", f"CASE WHEN {src.col} IS NOT NULL THEN 'expected true or false' END"
    return value, error


def _string(src: _Source, f: Field) -> tuple[str, str]:
    if src.is_json:
        kind_error = _json_kind_error(src, ("VARCHAR", "NUMBER", "BOOLEAN", "NULL"), "a string")
        value = f"(CASE WHEN {src.kind} IN ('VARCHAR', 'NUMBER', 'BOOLEAN') THEN NULLIF({src.text}, '') END)"
    else:
        value, kind_error = f"NULLIF({src.text}, '')", "NULL"
    if f.choices:
        value = f"upper({value})" if all(c.isupper() for c in f.choices) else f"lower({value})"
    v = f'"_v_{f.name}"'
    checks = [f"WHEN length({v}) > {MAX_TEXT} THEN 'longer than {MAX_TEXT} characters'"]
    if f.choices:
        allowed = ", ".join(_lit(c) for c in f.choices)
        checks.append(
            f"WHEN {v} NOT IN ({allowed}) THEN "
            f"{_lit('must be one of ' + ', '.join(f.choices) + ', got ')} || {_shown(v)}"
        )
    error = f"COALESCE({kind_error}, CASE {' '.join(checks)} END)"
    return value, error


def _timestamp(src: _Source, f: Field, now: datetime) -> tuple[str, str]:
    if src.is_json:
        text = f"(CASE WHEN {src.kind} = 'VARCHAR' THEN trim({src.text}) END)"
        epoch = f"(CASE WHEN {src.kind} = 'NUMBER' THEN {src.dbl} END)"
        kind_error = _json_kind_error(src, ("VARCHAR", "NUMBER", "NULL"), "a timestamp")
    elif src.is_text:
        text = f"(CASE WHEN {src.num} IS NULL THEN {src.text} END)"
        epoch, kind_error = src.dbl, "NULL"
    elif src.type.startswith("TIMESTAMP"):
        text, epoch, kind_error = "NULL", "NULL", "NULL"
    elif src.is_integer or src.is_float:
        text, epoch, kind_error = "NULL", src.dbl, "NULL"
    else:
        return (
            "NULL",
            f"CASE WHEN {src.col} IS NOT NULL THEN 'expected a timestamp, got {src.type.lower()}' END",
        )
    if src.type.startswith("TIMESTAMP"):
        value = f"CAST({src.col} AS TIMESTAMPTZ)"
    else:
        value = (
            f"COALESCE(TRY_CAST({text} AS TIMESTAMPTZ), "
            f"CASE WHEN isfinite({epoch}) AND abs({epoch}) < 1e11 THEN to_timestamp({epoch}) END)"
        )
    v = f'"_v_{f.name}"'
    limit = _lit((now + FUTURE_SKEW).isoformat())
    earliest = _lit(EARLIEST.isoformat())
    error = (
        f"COALESCE({kind_error}, CASE "
        f"WHEN {text} IS NOT NULL AND {v} IS NULL THEN 'not a timestamp: ' || {_shown(text)} "
        f"WHEN {epoch} IS NOT NULL AND {v} IS NULL THEN 'not a Unix time in seconds: ' || "
        f"COALESCE({src.num}, CAST({epoch} AS VARCHAR)) || {_epoch_unit_hint(epoch)} "
        f"WHEN {v} > TIMESTAMPTZ {limit} THEN 'in the future: ' || strftime({v}, '%Y-%m-%dT%H:%M:%SZ') "
        f"WHEN {v} < TIMESTAMPTZ {earliest} THEN 'before 2020-01-01 (' || strftime({v}, '%Y-%m-%d') || "
        f"'); is it in the wrong unit?' END)"
    )
    return value, error


def _epoch_unit_hint(epoch: str) -> str:
    """SQL text naming the unit an epoch number too large for seconds was most likely written in."""
    return (
        f"CASE WHEN abs({epoch}) BETWEEN 1e11 AND 1e14 THEN ' (milliseconds? divide by 1,000)' "
        f"WHEN abs({epoch}) BETWEEN 1e14 AND 1e17 THEN ' (microseconds? divide by 1,000,000)' "
        f"WHEN abs({epoch}) BETWEEN 1e17 AND 1e20 THEN ' (nanoseconds? divide by 1,000,000,000)' "
        "ELSE '' END"
    )


def _tags(src: _Source | None, tag_columns: Sequence[str]) -> tuple[str, str]:
    """Tags from a JSON object (or its text), a typed map or struct, plus CSV `tag.<name>` columns."""
    as_map = "MAP(VARCHAR, VARCHAR)"
    if src is None:
        value, error = "NULL", "NULL"
    elif src.is_json or src.is_text:
        present = f"NULLIF(trim({src.col}), '')"
        j = f"TRY_CAST({present} AS JSON)"
        is_object = f"(left({present}, 1) = '{{' AND json_valid({present}))"
        value = f"(CASE WHEN {is_object} THEN json_transform({j}, '\"{as_map}\"') END)"
        error = (
            f"CASE WHEN {present} IS NOT NULL AND NOT {is_object} "
            f'THEN \'expected an object of string tags, e.g. {{"region": "eu"}}\' END'
        )
    elif src.type.startswith("MAP"):
        value, error = f"CAST({src.col} AS {as_map})", "NULL"
    elif src.type.startswith("STRUCT"):
        value, error = f"json_transform(to_json({src.col}), '\"{as_map}\"')", "NULL"
    else:
        value, error = "NULL", f"CASE WHEN {src.col} IS NOT NULL THEN 'expected a map of string tags' END"
    entries = f"list_filter(map_entries(COALESCE({value}, MAP {{}})), lambda e: e.value IS NOT NULL)"
    if tag_columns:
        extra = ", ".join(
            f"{{'key': {_lit(name)}, 'value': NULLIF(trim(CAST(\"tag.{name}\" AS VARCHAR)), '')}}"
            for name in tag_columns
        )
        entries = f"list_concat({entries}, list_filter([{extra}], lambda e: e.value IS NOT NULL))"
    return f"CAST(map_from_entries({entries}) AS {as_map})", error


def _default_sql(f: Field) -> str:
    """The typed default of a field that the source does not have at all."""
    if f.kind == "map":
        return "CAST(MAP {} AS MAP(VARCHAR, VARCHAR))"
    if f.default is None:
        literal = "NULL"
    elif f.kind == "bool":
        literal = "true" if f.default else "false"
    elif f.kind == "str":
        literal = _lit(str(f.default))
    else:
        literal = str(f.default)
    return f"CAST({literal} AS {_duck_type(f)})"


def _field_sql(f: Field, src: _Source | None, now: datetime, tag_columns: Sequence[str]) -> tuple[str, str]:
    if f.kind == "map":
        return _tags(src, tag_columns)
    if src is None:
        return f"CAST(NULL AS {_duck_type(f)})", "NULL"
    if f.kind in ("tokens", "count", "int"):
        return _integer(src, f)
    if f.kind == "float":
        return _float(src, f)
    if f.kind == "bool":
        return _boolean(src, f)
    if f.kind == "money":
        return _money(src, f)
    if f.kind == "ts":
        return _timestamp(src, f, now)
    return _string(src, f)


def _duck_type(f: Field) -> str:
    from ..ledger.schema import DUCKDB_TYPES

    return DUCKDB_TYPES[f.kind]


def _usage_checks() -> list[tuple[str, str, str]]:
    """(field, condition, message SQL) for the subset rules, on typed columns."""
    return [
        (
            "cache_audio_read_tokens",
            "cache_audio_read_tokens > cache_read_tokens",
            "'cache_audio_read_tokens (' || cache_audio_read_tokens || ') exceeds cache_read_tokens (' "
            "|| cache_read_tokens || ')'",
        ),
        (
            "cache_audio_read_tokens",
            "cache_audio_read_tokens > input_audio_tokens",
            "'cache_audio_read_tokens (' || cache_audio_read_tokens || ') exceeds input_audio_tokens (' "
            "|| input_audio_tokens || ')'",
        ),
        (
            "cache_image_read_tokens",
            "cache_image_read_tokens > input_image_tokens",
            "'cache_image_read_tokens (' || cache_image_read_tokens || ') exceeds input_image_tokens (' "
            "|| input_image_tokens || ')'",
        ),
        (
            "cache_image_read_tokens",
            "cache_audio_read_tokens + cache_image_read_tokens > cache_read_tokens",
            "'cached audio and image tokens exceed cache_read_tokens (' || cache_read_tokens || ')'",
        ),
        (
            "cache_read_tokens",
            "cache_read_tokens > input_tokens",
            "'cache_read_tokens (' || cache_read_tokens || ') exceeds input_tokens (' || input_tokens || ')'",
        ),
        (
            "input_tokens",
            "cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens + input_audio_tokens "
            "- cache_audio_read_tokens + input_image_tokens - cache_image_read_tokens > input_tokens",
            "'cache reads (' || cache_read_tokens || ') + cache writes (' || "
            "(cache_write_5m_tokens + cache_write_1h_tokens) || ') + uncached audio/image tokens add up to more "
            "than input_tokens (' || input_tokens || ')'",
        ),
        (
            "reasoning_tokens",
            "reasoning_tokens > output_tokens",
            "'reasoning_tokens (' || reasoning_tokens || ') exceeds output_tokens (' || output_tokens || ')'",
        ),
        (
            "output_tokens",
            "reasoning_tokens + output_audio_tokens + output_image_tokens > output_tokens",
            "'reasoning, audio and image output tokens add up to more than output_tokens (' || output_tokens || ')'",
        ),
    ]


def build_sql(
    relation: str,
    source_types: Mapping[str, str],
    *,
    now: datetime | None = None,
    tag_columns: Sequence[str] = (),
    pre_error: bool = False,
    unknown_column: str | None = None,
    raw_column: str | None = None,
) -> str:
    """SQL typing `relation` into EVENT_SCHEMA columns plus `_row` and `_error` (NULL when valid).

    `source_types` maps field name -> 'json' | 'text' | DuckDB type of the raw column.
    `pre_error` says the relation has a `_pre_error` column (e.g. malformed JSON) that wins.
    `unknown_column` names a column holding the first unknown field of each record.
    `raw_column` is carried to the output as `_raw` for rejected records, to explain them.

    Stages: helper columns from the raw values, then numbers, then typed values, then one
    error per field, then the first error of the record. Each stage refers to the previous
    one by column name, which keeps the statement small enough to plan quickly.
    """
    now = now or datetime.now(UTC)
    sources = {f.name: _Source(f.name, source_types[f.name]) for f in FIELDS if f.name in source_types}
    stage1: list[str] = []
    stage2: list[str] = []
    typed: list[str] = []
    defaults: list[str] = []
    errors: list[str] = []
    for f in FIELDS:
        src = sources.get(f.name)
        if src is not None and f.kind != "map":
            stage1.extend(src.stage1())
            if f.kind in _NUMERIC_KINDS:
                stage2.extend(src.stage2())
        value, error = _field_sql(f, src, now, tag_columns)
        typed.append(f'{value} AS "_v_{f.name}"')
        defaults.append(
            f'COALESCE("_v_{f.name}", {_default_sql(f)}) AS "{f.name}"'
            if f.default is not None or f.kind == "map"
            else f'"_v_{f.name}" AS "{f.name}"'
        )
        if error != "NULL":
            errors.append(f'{error} AS "_e_{f.name}"')
        elif src is None and f.required:
            errors.append(f"'missing (required)' AS \"_e_{f.name}\"")
    error_names = {e.rsplit(' AS "_e_', 1)[1].rstrip('"') for e in errors}
    firsts: list[str] = []
    if pre_error:
        firsts.append("WHEN _pre_error IS NOT NULL THEN _pre_error")
    if unknown_column:
        firsts.append(
            f"WHEN {unknown_column} IS NOT NULL THEN {unknown_column} || {_lit(SEP)} || "
            f"'unknown field (not in the event schema)'"
        )
    for f in FIELDS:
        if f.name in error_names:
            firsts.append(f'WHEN "_e_{f.name}" IS NOT NULL THEN {_lit(f.name + SEP)} || "_e_{f.name}"')
        if f.required:
            firsts.append(f'WHEN "{f.name}" IS NULL THEN {_reason(f.name, _lit("missing (required)"))}')
    for name, condition, message in _usage_checks():
        firsts.append(f"WHEN {condition} THEN {_lit(name + SEP)} || {message}")
    keep = ["_row"]
    if pre_error:
        keep.append("_pre_error")
    if unknown_column:
        keep.append(unknown_column)
    if raw_column:
        keep.append(raw_column)
    raw_columns = [f"{src.source_col} AS {src.col}" for src in sources.values()] + [
        f'"tag.{t}"' for t in tag_columns
    ]
    columns = ", ".join(f'"{f.name}"' for f in FIELDS)
    raw_out = f", CASE WHEN {ERROR_COLUMN} IS NOT NULL THEN {raw_column} END AS _raw" if raw_column else ""
    s0 = ", ".join([*keep, *raw_columns])
    s1 = ", ".join(["*", *stage1])
    s2 = ", ".join(["*", *stage2])
    return (
        f"WITH s0 AS (SELECT {s0} FROM {relation}), s1 AS (SELECT {s1} FROM s0), "
        f"s2 AS (SELECT {s2} FROM s1), "
        f"s3 AS (SELECT *, {', '.join(typed)} FROM s2), "
        f"s3b AS (SELECT *, {', '.join(defaults)} FROM s3), "
        f"s4 AS (SELECT *, {', '.join(errors)} FROM s3b), "
        f"s5 AS (SELECT *, CASE {' '.join(firsts)} END AS {ERROR_COLUMN} FROM s4) "
        f"SELECT _row, {columns}, {ERROR_COLUMN}{raw_out} FROM s5"
    )


def split_result(
    result: pa.Table, explain_raw: Callable[[str], str] | None = None
) -> tuple[pa.Table, list[Rejection]]:
    """Valid rows (`_row` + EVENT_SCHEMA columns, in input order) and one Rejection per invalid row."""
    error = result.column(ERROR_COLUMN)
    valid_mask = error.is_null()
    good = result.filter(valid_mask).select([ROW_COLUMN, *(f.name for f in FIELDS)])
    rejections: list[Rejection] = []
    if good.num_rows != result.num_rows:
        bad = result.filter(pc.invert(valid_mask))
        raws = bad.column("_raw").to_pylist() if "_raw" in bad.column_names else [None] * bad.num_rows
        for row, text, raw in zip(
            bad.column(ROW_COLUMN).to_pylist(), bad.column(ERROR_COLUMN).to_pylist(), raws, strict=True
        ):
            field, _, reason = text.partition(SEP)
            if reason == "unknown field (not in the event schema)":
                reason += suggest_field(field)
            elif reason == "malformed JSON" and raw is not None and explain_raw is not None:
                reason = explain_raw(raw)
            rejections.append(Rejection(int(row), field, reason))
    return good, rejections
