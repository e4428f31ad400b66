"""Readers turn files and Python records into chunks of raw values, streaming.

Each chunk is an Arrow table with `_row` (the line or row number users will see in
errors) and raw columns, plus the SQL that presents it to the normaliser. No reader
holds more than one chunk: a 10-million-line file is read 32 MB at a time.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .normalise import IGNORED_FIELDS, KNOWN_FIELDS, SEP, Rejection, suggest_field
from .quickjson import json_quick_sql

BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 32 << 20
TABLE_ROWS = 200_000
PARALLEL_ROWS = 4096
SCAN_BYTES = 1 << 20


class IngestFileError(ValueError):
    """A file that cannot be read at all (unknown columns, unknown format, unreadable)."""


@dataclass
class RawChunk:
    table: pa.Table
    """`_row` plus raw columns (or `line` for JSON)."""
    kind: str
    """json | table"""
    rejections: list[Rejection] = field(default_factory=list)
    """Records the reader itself could not make sense of (e.g. a CSV row with too many columns)."""
    progress: int = 0
    """Bytes (files) or records (Python) consumed by this chunk, for progress bars."""
    tag_columns: tuple[str, ...] = ()


Progress = Callable[[int], None]


def detect_format(path: Path, *, option: str | None = "--input-format") -> str:
    """The format a file's name says; `option` is the command's option that names it instead."""
    name = path.name.lower()
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return fmt
    raise IngestFileError(
        f"{path}: cannot tell the format from the name; use .jsonl, .csv or .parquet"
        + (f" (or pass {option})" if option else "")
    )


def file_size(path: Path) -> int:
    return os.stat(path).st_size


# --------------------------------------------------------------------------- JSON lines


def read_jsonl(path: Path | BinaryIO, chunk_bytes: int | None = None) -> Iterator[RawChunk]:
    """Chunks of whole lines; `_row` is the 1-based line number; blank lines are skipped.

    `path` may be an open binary stream (standard input), gzip-compressed or not.
    Each chunk is read straight into a buffer of its own, which its lines then point into:
    the bytes are copied once (from the OS), not once per step (a block, the block after the
    previous chunk's partial last line, the whole lines of it).
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    line_no = 0
    scratch = np.empty(min(SCAN_BYTES, chunk_bytes), dtype=np.bool_)
    with _binary_input(path) as (handle, position):
        # A byte order mark (Windows tools write one) is not part of the first line: RFC 8259
        # lets a parser ignore it.
        head = _read_exactly(handle, len(BOM))
        head = _up_to_content(handle, b"" if head == BOM else head)
        if head.lstrip(JSON_SPACE)[:1] == b"[":  # one JSON array, not lines: `json.dump(events, f)`
            yield from _array_chunks(path, handle, head, position, chunk_bytes)
            return
        # The partial last line of the previous read.
        carry = np.frombuffer(head, dtype=np.uint8)
        reported = 0  # progress is bytes of the file as stored, compressed or not
        while True:
            buf = np.empty(len(carry) + chunk_bytes, dtype=np.uint8)
            buf[: len(carry)] = carry
            got = _fill(handle, buf.data[len(carry) :])
            data = buf[: len(carry) + got]
            if not len(data):
                return
            ends = _line_ends(data, scratch)
            if got == chunk_bytes:  # more may follow: keep the partial last line for the next chunk
                if not len(ends):  # a single line longer than the chunk: keep reading
                    carry = data
                    continue
                data, carry = data[: ends[-1]], data[ends[-1] :]
            elif not len(ends) or ends[-1] != len(data):  # the last line of the file has no newline
                ends = np.append(ends, len(data))
            table, rejections, line_no = _lines_table(data, ends, line_no)
            step, reported = position() - reported, position()
            yield RawChunk(table, "json", rejections, progress=step)
            if got < chunk_bytes:
                return


def _up_to_content(handle: io.RawIOBase | io.BufferedIOBase, head: bytes) -> bytes:
    """`head`, and while it is only whitespace what follows it, up to a byte that is not (or the end):
    enough to tell JSON lines from one JSON array. Once per file, never per line."""
    while not head.strip(JSON_SPACE):
        more = _read_exactly(handle, 4096)
        if not more:
            break
        head += more
    return head


def _array_chunks(
    source: Path | BinaryIO,
    handle: io.RawIOBase | io.BufferedIOBase,
    head: bytes,
    position: Callable[[], int],
    chunk_bytes: int,
) -> Iterator[RawChunk]:
    """The elements of a JSON array as chunks of JSON text, streaming like JSON lines.

    `_row` is the element's position in the array (from 1): a minified array has all its
    elements on line 1, and a row number must tell one record from another.
    """
    name = _shown_name(source)
    pending = [head]

    def read(size: int) -> bytes:
        return pending.pop() if pending else _read_exactly(handle, size)

    numbers: list[int] = []
    texts: list[str] = []
    rejections: list[Rejection] = []
    size = reported = 0
    try:
        for number, (element, _) in enumerate(json_array_items(read, min(chunk_bytes, SCAN_BYTES)), 1):
            try:
                texts.append(element.decode("utf-8"))
                numbers.append(number)
            except UnicodeDecodeError as exc:
                rejections.append(
                    Rejection(number, "record", f"is not UTF-8 text: {exc.reason} (re-encode the file)")
                )
            size += len(element)
            if size >= chunk_bytes:
                step, reported = position() - reported, position()
                yield _text_chunk(numbers, texts, rejections, step)
                numbers, texts, rejections, size = [], [], [], 0
    except JsonArrayError as exc:
        # The elements read before the break go in; the file is named as broken where it broke.
        yield _text_chunk(numbers, texts, rejections, position() - reported)
        raise IngestFileError(f"{name}: not a valid JSON array: {exc}") from None
    if texts or rejections:
        yield _text_chunk(numbers, texts, rejections, position() - reported)


def _text_chunk(numbers: list[int], texts: list[str], rejections: list[Rejection], progress: int) -> RawChunk:
    table = pa.table(
        {"_row": pa.array(numbers, type=pa.int64()), "line": pa.array(texts, type=pa.large_string())}
    )
    return RawChunk(table, "json", rejections, progress=progress)


# --------------------------------------------------------------------------- JSON arrays


def json_array_items(read: Callable[[int], bytes], block: int = SCAN_BYTES) -> Iterator[tuple[bytes, int]]:
    """The text of each element of the JSON array that `read(size)` gives (b"" at its end), and
    the line it starts on, streaming: one block and the element under way are held at a time.

    Only the structure is read: strings are skipped whole and elements are not parsed, so a
    broken element is that element's problem (its parser's). Raises JsonArrayError where the
    elements cannot be told apart any more: something else than a `[` first, a bracket that
    closes the wrong one, a comma with no element before it, the array not closed, text after it.
    """
    buf, line = _skip_space(read, block, b"", 1)
    if buf[:1] != b"[":
        raise JsonArrayError(f"expected `[` at line {line}, found {buf[:10]!r}" if buf else "empty")
    stack = bytearray(b"[")
    pos = start = 1  # where the scan goes on; where the element under way starts
    counted = 0  # `line` is the line at this offset of `buf`
    emitted = 0
    ended = False
    while stack:
        match = (_NEXT_AT_TOP if len(stack) == 1 else _NEXT_INSIDE).match(buf, pos)
        at = match.end() - 1 if match else len(buf)  # the byte that matters
        if at == len(buf) or buf[at] == QUOTE:
            # The buffer ends before the next byte that matters, or inside a string (whose
            # closing quote it does not hold yet): read on, keeping the element under way.
            if ended:
                where = line + buf.count(b"\n", counted, at)
                what = "a string is not closed" if match else "the array is not closed at the end of the file"
                raise JsonArrayError(f"{what} (line {where})")
            more = read(block)
            ended = not more
            line += buf.count(b"\n", counted, start)
            pos = at - start
            buf, start, counted = buf[start:] + more, 0, 0
            continue
        pos = at + 1
        byte = buf[at]
        if byte in OPENING:
            stack.append(byte)
            continue
        if byte == COMMA:
            element, line, counted = _element(buf, start, at, line, counted)
            start = pos
            emitted += 1
            yield element
            continue
        opened = stack.pop()
        if opened != _CLOSES[byte]:
            where = line + buf.count(b"\n", counted, at)
            raise JsonArrayError(f"`{chr(byte)}` at line {where} closes a `{chr(opened)}`")
        if not stack and (emitted or buf[start:at].strip(JSON_SPACE)):  # `[]` has no element
            element, line, counted = _element(buf, start, at, line, counted)
            yield element
    after, line = _skip_space(read, block, buf[pos:], line + buf.count(b"\n", counted, pos))
    if after:
        raise JsonArrayError(f"text after the end of the array at line {line}: {after[:20]!r}")


JSON_SPACE = b" \t\r\n"
QUOTE, COMMA, OPENING = ord('"'), ord(","), (ord("["), ord("{"))


class JsonArrayError(ValueError):
    """The structure around the elements of a JSON array is broken: where they are cannot be told."""


# Everything up to the next byte that matters, strings (escaped quotes and brackets in them
# included) skipped whole, then that byte: a bracket, a comma at the top level of the array
# (inside an element, commas do not matter), or the `"` of a string whose end the buffer does
# not hold yet. One match per bracket, not per string, in C; possessive, so nothing is scanned twice.
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_NEXT_AT_TOP = re.compile(rb'(?:[^"\[\]{},]++|' + _STRING + rb")*+(.)", re.DOTALL)
_NEXT_INSIDE = re.compile(rb'(?:[^"\[\]{}]++|' + _STRING + rb")*+(.)", re.DOTALL)
_CLOSES = {ord("]"): ord("["), ord("}"): ord("{")}


def _element(buf: bytes, start: int, end: int, line: int, counted: int) -> tuple[tuple[bytes, int], int, int]:
    """The element between `start` and `end` and the line it starts on, and the line count moved
    to its start (`line` is the line at offset `counted`)."""
    text = buf[start:end]
    element = text.strip(JSON_SPACE)
    first = end - len(text.lstrip(JSON_SPACE))
    line += buf.count(b"\n", counted, first)
    if not element:
        raise JsonArrayError(f"no element before the `{chr(buf[end])}` at line {line}")
    return (element, line), line, first


def _skip_space(read: Callable[[int], bytes], block: int, head: bytes, line: int) -> tuple[bytes, int]:
    """From `head` on, what `read` gives from its first byte that is not whitespace (b"" at the
    end), and the line that byte is on (`line` being the line `head` starts on)."""
    while True:
        content = head.lstrip(JSON_SPACE)
        line += head.count(b"\n", 0, len(head) - len(content))
        if content:
            return content, line
        head = read(block)
        if not head:
            return b"", line


@contextlib.contextmanager
def _binary_input(source: Path | BinaryIO) -> Iterator[tuple[Any, Callable[[], int]]]:
    """The bytes of `source` (a file, or a stream such as standard input), decompressed when it
    is gzip, and how many bytes of it as stored have been read so far (for progress bars)."""
    if isinstance(source, Path):
        with open(source, "rb", buffering=0) as raw, _decompressed(source, raw) as handle:
            yield handle, raw.tell
        return
    counted = _CountingReader(source)
    # A stream has no name to tell whether it is gzip: its first bytes do.
    head = counted.read(len(GZIP_MAGIC))
    replayed = _Replayed(head, counted)
    if head == GZIP_MAGIC:
        with gzip.GzipFile(filename=_stream_name(source), mode="rb", fileobj=replayed) as handle:
            yield handle, lambda: counted.consumed
    else:
        yield replayed, lambda: counted.consumed


GZIP_MAGIC = b"\x1f\x8b"


def _stream_name(stream: BinaryIO) -> str:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else "<stream>"


def _fill(handle: io.RawIOBase | io.BufferedIOBase, view: memoryview) -> int:
    """Read into `view` until it is full or the file ends; the number of bytes read."""
    filled = 0
    while filled < len(view):
        try:
            got = handle.readinto(view[filled:])
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise IngestFileError(
                f"{getattr(handle, 'name', 'the file')}: cannot be decompressed: {exc}"
            ) from None
        if not got:
            break
        filled += got
    return filled


def _read_exactly(handle: io.RawIOBase | io.BufferedIOBase, size: int) -> bytes:
    buffer = bytearray(size)
    return bytes(buffer[: _fill(handle, memoryview(buffer))])


def is_gzip(path: str | Path) -> bool:
    return str(path).lower().endswith(".gz")


def _decompressed(path: Path, raw: io.RawIOBase | io.BufferedIOBase) -> io.RawIOBase | io.BufferedIOBase:
    """`raw` itself, or a gzip reader over it for a `.gz` file (closing that leaves `raw` open,
    and closing `raw` twice is harmless)."""
    return gzip.GzipFile(filename=str(path), mode="rb", fileobj=raw) if is_gzip(path) else raw


def _line_ends(data: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The offset just past each newline. Scanned a slice at a time into one reused mask: a
    mask as long as the chunk is fresh memory each time, and faulting its pages in cost more
    than the scan."""
    parts = []
    for start in range(0, len(data), len(scratch)):
        piece = data[start : start + len(scratch)]
        mask = scratch[: len(piece)]
        np.equal(piece, 10, out=mask)
        parts.append(np.flatnonzero(mask) + (start + 1))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _lines_table(
    data: np.ndarray, ends: np.ndarray, first_line: int
) -> tuple[pa.Table, list[Rejection], int]:
    """The lines of `data` ending at `ends` (the last one at its end), numbered after `first_line`,
    and a rejection for each line that is not UTF-8 text (which is left out)."""
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends
    starts = offsets[:-1]
    lengths = ends - starts
    # Blank lines ("\n", "\r\n") are not records. A longer whitespace-only line is rare; the
    # careful SQL path drops it.
    first_byte = data[np.minimum(starts, len(data) - 1)]
    keep = (lengths > 2) | ((lengths == 2) & (first_byte != 13)) | ((lengths == 1) & (first_byte != 10))
    line_numbers = np.arange(first_line + 1, first_line + 1 + len(ends), dtype=np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    rejections = []
    for index, reason in _not_utf8(lines, data, starts, ends):
        keep[index] = False
        rejections.append(Rejection(int(line_numbers[index]), "record", reason))
    # Arrays over the NumPy buffers, not pa.array(ndarray): that asks whether its input is a pandas
    # object, which imports pandas (0.16 s, a twentieth of a million events' ingest).
    rows = pa.Array.from_buffers(pa.int64(), len(line_numbers), [None, pa.py_buffer(line_numbers)])
    table = pa.table({"_row": rows, "line": lines})
    if not keep.all():
        kept = pa.Array.from_buffers(pa.uint8(), len(keep), [None, pa.py_buffer(keep.view(np.uint8))])
        table = table.filter(kept.cast(pa.bool_()))
    # Small batches let the engine check several of them at once, one per core.
    batches = table.to_batches(max_chunksize=PARALLEL_ROWS)
    return pa.Table.from_batches(batches, schema=table.schema), rejections, first_line + len(ends)


def _not_utf8(
    lines: pa.Array, data: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> Iterator[tuple[int, str]]:
    """The lines that are not UTF-8 text, with where they break.

    JSON text is UTF-8 (RFC 8259), and every later step takes the lines as such: DuckDB fails
    on the whole chunk, and cannot go on, at the first bad byte. ASCII, the usual case, is
    found with one vectorised test; other text is validated in one pass by Arrow; lines are
    looked at one by one only when that fails, and only those with a byte outside ASCII.
    """
    if not len(data) or int(data.max()) < 0x80:
        return
    try:
        lines.validate(full=True)
        return
    except pa.ArrowInvalid:
        pass
    high = np.flatnonzero(data >= 0x80)
    for index in np.unique(np.searchsorted(ends, high, side="right")):
        start, end = int(starts[index]), int(ends[index])
        try:
            data[start:end].tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = int(data[start + exc.start])
            yield (
                int(index),
                f"is not UTF-8 text: byte 0x{byte:02X} at column {exc.start + 1} "
                "(JSON lines must be UTF-8; re-encode the file, e.g. from Latin-1)",
            )


def json_source_sql(relation: str, *, careful: bool = True) -> tuple[str, dict[str, str], str]:
    """SQL presenting JSON lines as one value per field, with `_pre_error` and `_unknown`.

    The careful form parses each line once into a struct of JSON values, whose text
    everything after works on; it checks each line is a JSON object first (and says so
    when it is not). The quick form (`quickjson`) parses straight into typed values and
    flags every line that is not a plain event; it fails as a whole on a malformed line,
    which the caller answers by running the careful form.
    """
    if not careful:
        return json_quick_sql(relation)
    fields = sorted(KNOWN_FIELDS)
    struct = "{" + ", ".join(f'"{name}": "JSON"' for name in fields) + "}"
    allowed = ", ".join(f"'{name}'" for name in sorted(KNOWN_FIELDS | IGNORED_FIELDS))
    extract = ", ".join(f'CAST(_j."{name}" AS VARCHAR) AS "{name}"' for name in fields)
    unknown = f"list_filter(json_keys(line), lambda k: NOT list_contains([{allowed}], k))[1]"
    sql = (
        f"SELECT _row, line AS _line, "
        f"CASE WHEN NOT _valid THEN 'record{SEP}malformed JSON' "
        f"WHEN NOT _object THEN 'record{SEP}expected a JSON object (one event per line)' END AS _pre_error, "
        f"CASE WHEN _object THEN {unknown} END AS _unknown, {extract} "
        f"FROM (SELECT _row, line, _valid, _object, "
        f"CASE WHEN _object THEN json_transform(line, '{struct}') END AS _j "
        f"FROM (SELECT _row, line, _valid, _valid AND left(ltrim(line), 1) = '{{' AS _object "
        f"FROM (SELECT _row, line, json_valid(line) AS _valid FROM {relation} "
        f"WHERE trim(line, ' ' || chr(9) || chr(10) || chr(13)) <> '')))"
    )
    return sql, dict.fromkeys(fields, "json"), "_unknown"


def explain_bad_json(raw: str) -> str:
    """Python's own parser says where a line breaks, and finds NaN, which DuckDB accepts."""
    raw = raw.strip()
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except _ConstantError as exc:
        return f"{exc} is not valid JSON"
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} at column {exc.colno}"
    return "malformed JSON"


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(name)


# --------------------------------------------------------------------------- CSV


def read_csv(
    path: Path | BinaryIO, *, allow_unknown: bool = False, block_bytes: int | None = None
) -> Iterator[RawChunk]:
    """Chunks of rows typed as text; `_row` is the line of the file the row starts on (the
    header is line 1), counting blank lines and the newlines inside quoted values.

    Blank lines, and rows whose cells are all empty (spreadsheets end files with `,,,,`),
    are not records: they are skipped, as blank lines are in JSON lines.
    """
    try:
        with _binary_input(path) as (handle, position):
            header_line = handle.readline()
            header = _csv_header(path, header_line)
            columns, tag_columns = _check_columns(_shown_name(path), header, allow_unknown)
            source = _Replayed(header_line, handle)
            reported = 0
            for block, rejected in _csv_tables(source, header, columns, block_bytes):
                text, not_text = _screen_utf8(block)
                step, reported = position() - reported, position()
                yield RawChunk(
                    _without_blank_rows(text, columns),
                    "table",
                    rejected + not_text,
                    progress=step,
                    tag_columns=tag_columns,
                )
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise IngestFileError(f"{_shown_name(path)}: cannot be decompressed: {exc}") from None


def _shown_name(source: Path | BinaryIO) -> str:
    return str(source) if isinstance(source, Path) else _stream_name(source)


class _Replayed:
    """A stream that gives `head` (already read from it) before the rest of `handle`."""

    def __init__(self, head: bytes, handle: Any) -> None:
        self._head = head
        self._handle = handle
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return bytes(self._handle.read(size))
        if size < 0:
            data, self._head = self._head + bytes(self._handle.read()), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data

    def readinto(self, view: memoryview) -> int:
        if not self._head:
            return int(self._handle.readinto(view) or 0)
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        if b"\n" in self._head:
            end = self._head.index(b"\n") + 1
            data, self._head = self._head[:end], self._head[end:]
            return data
        data, self._head = self._head + bytes(self._handle.readline(size)), b""
        return data

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("a stream is read once, from its start")

    def close(self) -> None:
        self.closed = True


def _csv_tables(
    source: Any, header: list[str], columns: list[str], block_bytes: int | None
) -> Iterator[tuple[pa.Table, list[Rejection]]]:
    """Each block of `source` as `columns` plus `_row`, and its rows that do not fit the header.

    Arrow numbers records, not lines: a record's line is its number plus every newline inside
    the quoted values of the records before it (the `_CsvLines` count).
    """
    lines = _CsvLines()
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=block_bytes or CHUNK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(
            invalid_row_handler=lines.on_invalid,
            # Empty lines are kept as rows (of empty cells) so that record numbers count them.
            ignore_empty_lines=False,
            # A quoted value may hold a newline (RFC 4180); without this, one that falls on a
            # block boundary fails the whole file.
            newlines_in_values=True,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=False,
            # Bad bytes would fail the whole block; `_screen_utf8` names their rows instead.
            check_utf8=False,
            include_columns=columns,
        ),
    )
    schema = None
    for batch in reader:
        table = pa.Table.from_batches([batch])
        schema = table.schema
        numbers, rejected = lines.number(table)
        yield table.append_column("_row", pa.array(numbers, pa.int64())), rejected
    rest = lines.rest()
    if rest:
        empty = (schema or pa.schema([(name, pa.string()) for name in columns])).empty_table()
        yield empty.append_column("_row", pa.array([], pa.int64())), rest


class _CsvLines:
    """Turns Arrow's record numbers into line numbers, one block after the other.

    Arrow numbers every record, the invalid ones it skips too (reported to `on_invalid` as it
    parses a block, which may be a block ahead of the one handed out). Each record starts on
    its number plus the newlines inside the records before it.
    """

    def __init__(self) -> None:
        self._next_record = 2  # the header is record 1
        self._extra_newlines = 0  # inside the quoted values of every record numbered so far
        self._invalid: dict[int, tuple[int, str]] = {}  # record -> newlines inside, reason ("" when blank)
        self._unnumbered: list[Rejection] = []

    def on_invalid(self, row: Any) -> str:
        text = row.text or ""
        # A line of spaces is blank, not a record: it is skipped without a word.
        reason = (
            f"has {row.actual_columns} columns, the header has {row.expected_columns}" if text.strip() else ""
        )
        if row.number is None:
            if reason:
                self._unnumbered.append(Rejection(-1, "record", reason))
        else:
            self._invalid[int(row.number)] = (text.count("\n"), reason)
        return "skip"

    def number(self, table: pa.Table) -> tuple[np.ndarray, list[Rejection]]:
        """The line of each row of `table`, and a rejection for each invalid row before its last."""
        records = _line_numbers(self._next_record, table.num_rows, sorted(self._invalid))
        last = int(records[-1]) if len(records) else self._next_record - 1
        return self._lines(records, _newlines_inside(table), last)

    def rest(self) -> list[Rejection]:
        """Rejections for the invalid rows after the last valid one."""
        last = max(self._invalid, default=self._next_record - 1)
        return self._lines(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), last)[1]

    def _lines(
        self, records: np.ndarray, inside: np.ndarray, last: int
    ) -> tuple[np.ndarray, list[Rejection]]:
        skipped = sorted(r for r in self._invalid if r <= last)
        invalid = [self._invalid.pop(r) for r in skipped]
        every = np.concatenate([records, np.asarray(skipped, dtype=np.int64)])
        holds = np.concatenate([inside, np.asarray([n for n, _ in invalid], dtype=np.int64)])
        order = np.argsort(every, kind="stable")
        before = np.empty(len(every), dtype=np.int64)
        before[order] = self._extra_newlines + np.cumsum(holds[order]) - holds[order]
        lines = every + before
        self._extra_newlines += int(holds.sum())
        self._next_record = max(self._next_record, last + 1)
        rejected, self._unnumbered = self._unnumbered, []
        for (_, reason), line in zip(invalid, lines[len(records) :].tolist(), strict=True):
            if reason:
                rejected.append(Rejection(int(line), "record", reason))
        return lines[: len(records)], rejected


def _newlines_inside(table: pa.Table) -> np.ndarray:
    """How many newlines each row holds in its (quoted) values."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if pc.any(pc.match_substring(column, "\n")).as_py():
            total += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
    return total


def _without_blank_rows(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` without the rows whose every cell is empty or spaces (a blank line, a row of commas).

    Column by column, only as long as some row is still blank: usually the first column ends it.
    """
    blank: pa.ChunkedArray | None = None
    for name in columns:
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table.column(name))), 0)
        blank = empty if blank is None else pc.and_(blank, empty)
        if not pc.any(blank).as_py():
            return table
    return table if blank is None else table.filter(pc.invert(blank))


class _CountingReader:
    """A file wrapper that remembers how many bytes were read, for progress bars."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.consumed = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._handle.read(size)
        self.consumed += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        got = int(self._handle.readinto(view) or 0)
        self.consumed += got
        return got

    def readline(self, size: int = -1) -> bytes:
        data: bytes = self._handle.readline(size)
        self.consumed += len(data)
        return data

    def readable(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return _stream_name(self._handle)

    def seek(self, offset: int, whence: int = 0) -> int:
        # Only a gzip reader going back to the start of the file ever asks.
        self.consumed = int(self._handle.seek(offset, whence))
        return self.consumed

    def close(self) -> None:
        self.closed = True


def _line_numbers(first: int, n: int, skipped: list[int]) -> np.ndarray:
    """Line numbers of `n` consecutive records starting at `first`, around lines that were skipped."""
    if not skipped:
        return np.arange(first, first + n, dtype=np.int64)
    candidates = np.arange(first, first + n + len(skipped), dtype=np.int64)
    return np.setdiff1d(candidates, np.asarray(skipped, dtype=np.int64), assume_unique=True)[:n]


def _csv_header(path: Path | BinaryIO, raw: bytes) -> list[str]:
    """The column names of the header line `raw`, read from `path`."""
    name = _shown_name(path)
    # Only the header line is decoded here: a bad byte further down is its own row's problem.
    try:
        first = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestFileError(
            f"{name}: the header line is not UTF-8 text (byte 0x{raw[exc.start]:02X} at column "
            f"{exc.start + 1}); re-encode the file as UTF-8"
        ) from None
    if not first.strip():
        raise IngestFileError(f"{name}: empty file or no header line")
    return next(csv.reader([first]))


def _check_columns(
    path: Path | str, names: Iterable[str], allow_unknown: bool
) -> tuple[list[str], tuple[str, ...]]:
    keep: list[str] = []
    tags: list[str] = []
    unknown: list[str] = []
    for name in names:
        if name in KNOWN_FIELDS:
            keep.append(name)
        elif name.startswith("tag.") and len(name) > 4:
            keep.append(name)
            tags.append(name[4:])
        elif name not in IGNORED_FIELDS:
            unknown.append(name)
    if unknown and not allow_unknown:
        detail = "; ".join(f'"{u}"{suggest_field(u)}' for u in unknown)
        raise IngestFileError(
            f"{path}: unknown column(s): {detail}. Tags go in a `tags` JSON column or "
            "`tag.<name>` columns; --allow-unknown-fields ignores the rest"
        )
    return keep, tuple(tags)


# --------------------------------------------------------------------------- Parquet


def read_parquet(path: Path, *, allow_unknown: bool = False, rows: int = TABLE_ROWS) -> Iterator[RawChunk]:
    if is_gzip(path):
        # Parquet compresses its own pages and is read from the end: a gzipped one cannot stream.
        raise IngestFileError(f"{path}: a gzipped Parquet file cannot be read as it streams; gunzip it first")
    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowInvalid as exc:  # a missing file stays an OSError, as for the other formats
        raise IngestFileError(f"{path}: not a Parquet file ({_one_line(exc)})") from None
    columns, tag_columns = _check_columns(path, parquet.schema_arrow.names, allow_unknown)
    total_rows = max(parquet.metadata.num_rows, 1)
    size = file_size(path)
    first = 1
    for batch in _parquet_batches(path, parquet, rows, columns):
        n = batch.num_rows
        table = pa.Table.from_batches([batch]).append_column(
            "_row", pa.array(np.arange(first, first + n, dtype=np.int64))
        )
        first += n
        table, not_text = _screen_utf8(table)
        yield RawChunk(table, "table", not_text, progress=size * n // total_rows, tag_columns=tag_columns)


def _parquet_batches(
    path: Path, parquet: pq.ParquetFile, rows: int, columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """The file's batches; a page that cannot be read stops it as a file's problem, naming the file."""
    batches = parquet.iter_batches(batch_size=rows, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise IngestFileError(f"{path}: cannot be read as Parquet: {_one_line(exc)}") from None
        if batch is None:
            return
        yield batch


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _screen_utf8(table: pa.Table) -> tuple[pa.Table, list[Rejection]]:
    """`table` without the rows whose text is not UTF-8, and a rejection naming each one's field.

    Neither the CSV reader (told not to, so that one bad cell does not fail its whole block) nor
    a Parquet file guarantees it, and DuckDB cannot go on after a bad byte. Arrow's validation
    of a column is one fast pass; rows are looked at one by one only in a column that fails it.
    """
    bad: dict[int, str] = {}
    for name in table.column_names:
        column = table.column(name)
        if not _holds_text(column.type):
            continue
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for index in _rows_not_utf8(column.combine_chunks()):
            bad.setdefault(index, name)
    if not bad:
        return table, []
    rows = table.column("_row")
    rejections = [
        Rejection(
            int(rows[index].as_py()),
            field,
            "is not UTF-8 text (re-encode the file as UTF-8, e.g. from Latin-1)",
        )
        for index, field in sorted(bad.items())
    ]
    keep = np.ones(table.num_rows, dtype=np.bool_)
    keep[list(bad)] = False
    return table.filter(pa.array(keep)), rejections


def _rows_not_utf8(values: pa.Array) -> set[int]:
    """The positions in `values` whose text, or text inside, is not UTF-8."""
    kind = values.type
    if pa.types.is_map(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        # The children are whole (a slice of the parent is not a slice of them): the offsets
        # say which child values belong to which row.
        offsets = np.asarray(values.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        children = [values.keys, values.items] if pa.types.is_map(kind) else [values.values]
        rows: set[int] = set()
        for child in children:
            for position in _rows_not_utf8(child):
                if offsets[0] <= position < offsets[-1]:
                    rows.add(int(np.searchsorted(offsets, position, side="right")) - 1)
        return rows
    if pa.types.is_struct(kind):
        return set().union(*(_rows_not_utf8(values.field(i)) for i in range(kind.num_fields)))
    if not _holds_text(kind):
        return set()
    try:
        values.validate(full=True)
        return set()
    except pa.ArrowInvalid:
        pass
    bad = set()
    for index in range(len(values)):
        try:
            values.slice(index, 1).validate(full=True)
        except pa.ArrowInvalid:
            bad.add(index)
    return bad


def _holds_text(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return True
    if pa.types.is_map(kind):
        return _holds_text(kind.key_type) or _holds_text(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _holds_text(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_holds_text(kind.field(i).type) for i in range(kind.num_fields))
    return False


# --------------------------------------------------------------------------- Python records


def records_to_lines(
    records: Iterable[Mapping[str, Any]], first: int = 1, rows: int = TABLE_ROWS
) -> Iterator[RawChunk]:
    """Python dicts become JSON lines, so they pass exactly the same checks as files."""
    numbers: list[int] = []
    lines: list[str] = []
    unwritable: list[Rejection] = []
    position = first - 1
    for position, record in enumerate(records, start=first):
        try:
            line = record_json(record)
        except TypeError as exc:  # orjson's JSONEncodeError too: one record's problem, not the batch's
            unwritable.append(Rejection(position, *_unwritable(record, exc)))
            continue
        numbers.append(position)
        lines.append(line)
        if len(lines) >= rows:
            yield _records_chunk(numbers, lines, unwritable)
            numbers, lines, unwritable = [], [], []
    if lines or unwritable:
        yield _records_chunk(numbers, lines, unwritable)


def record_json(record: Mapping[str, Any]) -> str:
    """One Python record as the JSON line the checks read. Raises TypeError for a value JSON cannot hold."""
    # orjson writes NaN as null, which would turn a broken count into a default; the standard
    # library writes NaN, which the checks then reject by name.
    if any(isinstance(v, float) and not math.isfinite(v) for v in record.values()):
        return json.dumps(record, default=_json_default)
    return orjson.dumps(record, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _unwritable(record: Mapping[str, Any], error: TypeError) -> tuple[str, str]:
    """The field of `record` that cannot be written as JSON text, and why."""
    for key, value in record.items():
        try:
            record_json({key: value})
        except TypeError as exc:
            error = exc
            field = str(key)
            break
    else:
        field = "record"
    if "surrogates" in str(error):
        return (
            field,
            "is not valid Unicode text: it holds a lone surrogate (bytes decoded with surrogateescape?)",
        )
    return field, str(error)


def _records_chunk(numbers: list[int], lines: list[str], rejections: list[Rejection]) -> RawChunk:
    table = pa.table(
        {"_row": pa.array(numbers, type=pa.int64()), "line": pa.array(lines, type=pa.large_string())}
    )
    return RawChunk(table, "json", rejections, progress=len(lines) + len(rejections))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return value
    if hasattr(value, "value"):  # enums
        return value.value
    raise TypeError(f"cannot represent {type(value).__name__} as JSON")
