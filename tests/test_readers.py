"""The JSON lines reader: every line once, with its true line number, whatever the chunk size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unitcost.ingest.readers import read_jsonl


def expected_lines(data: bytes) -> list[tuple[int, str]]:
    """(line number, text with its line ending) of each non-blank line, the plain way."""
    lines = re.findall(rb"[^\n]*\n|[^\n]+\Z", data.removeprefix(b"\xef\xbb\xbf"))
    return [
        (number, line.decode()) for number, line in enumerate(lines, start=1) if line not in (b"\n", b"\r\n")
    ]


def read_back(path: Path, chunk_bytes: int) -> tuple[list[tuple[int, str]], int]:
    got: list[tuple[int, str]] = []
    progress = 0
    for chunk in read_jsonl(path, chunk_bytes=chunk_bytes):
        assert chunk.kind == "json"
        got.extend(
            zip(chunk.table.column("_row").to_pylist(), chunk.table.column("line").to_pylist(), strict=True)
        )
        progress += chunk.progress
    return got, progress


SAMPLES = {
    "plain": b'{"a": 1}\n{"b": 2}\n{"c": 3}\n',
    "no final newline": b'{"a": 1}\n{"b": 2}',
    "blank lines and CRLF": b'{"a": 1}\r\n\r\n\n{"b": 2}\r\n\n',
    "leading blank lines": b'\n\n\r\n{"a": 1}\n',
    "a line longer than the chunk": b'{"a": 1}\n{"long": "' + b"x" * 300 + b'"}\n{"c": 3}\n',
    "multibyte text": '{"team": "équipe ☃"}\n{"team": "日本"}\n'.encode(),
    "one character lines": b"1\n\n2\n3",
    "only blank lines": b"\n\r\n\n",
    "empty": b"",
    "byte order mark": b'\xef\xbb\xbf{"a": 1}\n{"b": "\xef\xbb\xbf"}\n',
    "byte order mark and a blank first line": b'\xef\xbb\xbf\n{"a": 1}\n',
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 16, 64, 1 << 20])
def test_every_line_once_with_its_number(tmp_path: Path, name: str, chunk_bytes: int) -> None:
    data = SAMPLES[name]
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    got, progress = read_back(path, chunk_bytes)
    assert got == expected_lines(data)
    assert progress == len(data)


def test_a_file_ending_exactly_at_a_chunk_edge(tmp_path: Path) -> None:
    data = b'{"a": 1}\n' * 8  # 72 bytes: chunks of 9 and 24 end exactly at the end of the file
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    for chunk_bytes in (9, 24, 72):
        assert read_back(path, chunk_bytes) == (expected_lines(data), len(data))
