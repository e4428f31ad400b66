"""Files as users really bring them: one JSON array (`json.dump(events, f)`, an API's export) to
`unitcost ingest` and `unitcost import`, read as it streams; several files at once from Python
and from the CLI, a bad one among good ones; a file that is not Parquet at all."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from test_ingest_edges import TS, event
from unitcost.cli import app
from unitcost.connectors import importers
from unitcost.ingest import pipeline, readers
from unitcost.ingest.readers import IngestFileError


def items(data: bytes, block: int = 1 << 20) -> list[tuple[bytes, int]]:
    return list(readers.json_array_items(io.BytesIO(data).read, block))


# --------------------------------------------------------------------------- the splitter

# Text that trips a naive splitter: quotes, escaped quotes, brackets, commas and newlines in strings.
tricky_text = st.text(alphabet=st.sampled_from(list('ab"\\[]{},:\n\t é€😀')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    elements=st.lists(json_values, max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    block=st.integers(1, 9),
    lead=st.sampled_from(["", "\n", "  \n\n"]),
)
def test_the_splitter_gives_each_element_of_any_array_with_its_line(
    elements: list[Any], indent: int | None, block: int, lead: str
) -> None:
    text = lead + json.dumps(elements, indent=indent, ensure_ascii=False) + "\n"
    found = items(text.encode(), block)  # blocks of a few bytes: every boundary falls mid-token
    assert [json.loads(element) for element, _ in found] == elements
    # The line each element starts on is the line its text starts on in the file.
    lines = text.split("\n")
    for element, line in found:
        assert element.decode().split("\n")[0] in lines[line - 1]


@settings(max_examples=200, deadline=None)
@given(
    elements=st.lists(json_values, min_size=1, max_size=6), cut=st.integers(0, 10**6), block=st.integers(1, 9)
)
def test_an_array_cut_short_is_an_error_never_a_silent_end(elements: list[Any], cut: int, block: int) -> None:
    text = json.dumps(elements).encode()
    cut_at = cut % len(text)  # the closing `]` at least is gone
    with pytest.raises(readers.JsonArrayError):
        items(text[:cut_at], block)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'[{"a": 1},\n{"b": 2},\n]', "no element before the `]` at line 3"),
        (b"[1,,2]", "no element before the `,`"),
        (b'[{"a": [1}]', "`}` at line 1 closes a `[`"),
        (b'[{"a": 1}] {"b": 2}', "text after the end of the array"),
        (b'{"data": []}', "expected `[`"),
        (b'[{"a": "\\"]', "a string is not closed"),
    ],
)
def test_a_broken_structure_says_what_and_where(text: bytes, message: str) -> None:
    with pytest.raises(readers.JsonArrayError, match=message.replace("[", r"\[").replace("{", r"\{")):
        items(text, 3)


# --------------------------------------------------------------------------- unitcost ingest


def test_one_json_array_is_ingested_compact_pretty_gzipped_or_from_a_stream(ledger, tmp_path: Path) -> None:
    """It was one line rejected ("expected a JSON object"), or, pretty-printed, a rejection per line."""
    events = [event("a1"), event("a2", input_tokens=-1), event("a3", feature='say "hi" [x], {y}')]
    compact = tmp_path / "events.json"
    compact.write_text(json.dumps(events))
    summary = ledger.ingest(compact)
    assert (summary.accepted, [(r.record, r.field) for r in summary.rejections]) == (2, [(2, "input_tokens")])
    pretty = tmp_path / "pretty.json.gz"
    pretty.write_bytes(
        gzip.compress(b"\xef\xbb\xbf\n" + json.dumps([event("b1"), event("b2")], indent=2).encode())
    )
    assert ledger.ingest(pretty).accepted == 2
    streamed = ledger.ingestor().ingest_stream(io.BytesIO(json.dumps([event("c1")]).encode()))
    assert streamed.accepted == 1
    assert ledger.count() == 5
    stored = ledger.store.fetch("SELECT feature FROM events WHERE event_id = 'a3'").to_pylist()
    assert stored == [{"feature": 'say "hi" [x], {y}'}]


def test_a_broken_array_keeps_what_came_before_and_names_the_break(ledger, tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text("[" + ",\n".join(json.dumps(event(f"k{i}")) for i in range(3)) + ",\n]")
    with pytest.raises(
        IngestFileError, match=r"cut\.json: not a valid JSON array: no element before"
    ) as caught:
        ledger.ingest(path)
    assert caught.value.summary.accepted == 3  # type: ignore[attr-defined]
    assert ledger.count() == 3


def test_a_file_that_is_not_parquet_is_named_and_the_others_still_go_in(tmp_path: Path) -> None:
    """It stopped the whole command with a bare Arrow error: the good file after it was never read."""
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(event("g1")) + "\n")
    ledger = tmp_path / "l.duckdb"
    result = CliRunner().invoke(
        app, ["ingest", str(bad), str(good), "--ledger", str(ledger), "--format", "json"]
    )
    assert result.exit_code == 2, result.output
    data = json.loads(result.output)
    assert data["accepted"] == 1
    assert [f["file"] for f in data["unreadable_files"]] == [str(bad)]
    assert "not a Parquet file" in data["unreadable_files"][0]["error"]


# --------------------------------------------------------------------------- several files from Python


def test_ledger_ingest_reads_every_readable_file_and_names_every_other(ledger, tmp_path: Path) -> None:
    """`Ledger.ingest(a, b, c)` stopped at the first bad file: the files after it were never read."""
    missing = tmp_path / "missing.jsonl"
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps(event("f1")) + "\n" + json.dumps(event("f2", input_tokens=-3)) + "\n")
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(json.dumps(event("n1")) + "\n")
    typo = tmp_path / "typo.csv"
    typo.write_text(f"event_id,ts,model,input_token\nt1,{TS},gpt-4o,1\n")
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_bytes(b"PAR1")
    last = tmp_path / "last.parquet"
    pq.write_table(pa.table({"event_id": ["p1"], "ts": [TS], "model": ["gpt-4o"], "input_tokens": [5]}), last)
    with pytest.raises(pipeline.UnreadableFilesError) as caught:
        ledger.ingest(missing, first, not_gzip, typo, not_parquet, tmp_path, last)
    error = caught.value
    assert isinstance(error, IngestFileError)
    assert str(error).startswith("5 of 7 files could not be read")
    summary = error.summary
    assert (summary.accepted, summary.rejected) == (2, 1)
    assert ledger.count() == 2
    reasons = dict(summary.unreadable)
    assert list(reasons) == [str(p) for p in (missing, not_gzip, typo, not_parquet, tmp_path)]
    assert "No such file" in reasons[str(missing)]
    assert "cannot be decompressed" in reasons[str(not_gzip)]
    assert '"input_token"' in reasons[str(typo)]
    assert "not a Parquet file" in reasons[str(not_parquet)]
    assert "is a directory" in reasons[str(tmp_path)]
    # Whose a rejection is: each file's own summary.
    assert [(r.record, r.field) for r in summary.files[str(first)].rejections] == [(2, "input_tokens")]
    assert summary.files[str(last)].accepted == 1


def test_one_unreadable_file_raises_its_own_reason(ledger, tmp_path: Path) -> None:
    path = tmp_path / "gone.jsonl"
    with pytest.raises(pipeline.UnreadableFilesError, match=r"^.*gone\.jsonl: No such file or directory$"):
        ledger.ingest(path)


# --------------------------------------------------------------------------- unitcost import

LITELLM_ROW = {
    "request_id": "chatcmpl-1",
    "call_type": "acompletion",
    "spend": 0.00042,
    "total_tokens": 150,
    "prompt_tokens": 100,
    "completion_tokens": 50,
    "startTime": "2025-09-10T10:00:00.000Z",
    "endTime": "2025-09-10T10:00:01.000Z",
    "model": "gpt-4o-mini",
    "custom_llm_provider": "openai",
    "metadata": {"note": 'a "quoted" ] and }, inside'},
    "messages": [{"role": "user", "content": "x" * 400}],
}


def litellm_rows(n: int) -> list[dict[str, Any]]:
    return [{**LITELLM_ROW, "request_id": f"chatcmpl-{i}"} for i in range(n)]


def test_a_json_array_is_imported_as_it_streams(
    ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The array was read and parsed whole before its first item: a 10 GB export held in memory."""
    path = tmp_path / "spend.json"
    path.write_text(json.dumps(litellm_rows(3000)))  # about 2 MB: several 1 MiB blocks
    parsed: list[int] = []

    def loads(text: bytes | str) -> Any:
        parsed.append(len(text))
        return orjson.loads(text)

    monkeypatch.setattr(
        importers, "orjson", SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError)
    )
    assert importers.import_file(ledger, "litellm", path).accepted == 3000
    assert max(parsed) < 2000  # one item at a time, never the document


def test_a_broken_element_of_an_array_is_rejected_alone(ledger, tmp_path: Path) -> None:
    """One bad element refused the whole export ("not valid JSON"), as no JSON lines file would be."""
    rows = [json.dumps(r) for r in litellm_rows(3)]
    path = tmp_path / "spend.json"
    path.write_text(
        "[\n" + ",\n".join([rows[0], '{"request_id": "bad", "spend": 0.1,, "x": 1}', rows[2]]) + "\n]\n"
    )
    result = importers.import_file(ledger, "litellm", path)
    assert (result.accepted, result.rejected) == (2, 1)
    assert (result.rejections[0].record, result.rejections[0].field) == (2, "record")
    assert "malformed JSON" in result.rejections[0].reason


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(1, 10**6))
def test_a_structurally_broken_array_writes_nothing(
    cut: int, ledger, tmp_path_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importers, "BATCH", 2)  # batches are written before the end is reached
    text = json.dumps(litellm_rows(10)).encode()
    path = tmp_path_factory.mktemp("cut") / "spend.json"
    path.write_bytes(text[: len(text) // 2 + cut % (len(text) // 2)])
    before = ledger.count()
    with pytest.raises(importers.ImportFileError, match="not valid JSON"):
        importers.import_file(ledger, "litellm", path)
    assert ledger.count() == before


@pytest.mark.parametrize("engine", ["duckdb", "clickhouse"])
def test_the_unpriced_count_is_of_the_events_stored_not_of_the_duplicates(
    tmp_path: Path, engine: str
) -> None:
    """A file ingested again stores nothing: it must not say it stored calls with no price."""
    import uuid

    from unitcost.api import Ledger
    from unitcost.config import Config

    first = tmp_path / "first.jsonl"
    first.write_text(
        "".join(
            json.dumps(event(f"e{i}", model="gpt-4o" if i % 2 else "acme-7b", provider=None)) + "\n"
            for i in range(6)
        )
    )
    overlapping = tmp_path / "overlapping.jsonl"  # e4, e5 again; e6 priced, e7 and e8 not
    overlapping.write_text(
        "".join(
            json.dumps(event(f"e{i}", model="gpt-4o" if i in (5, 6) else "acme-7b", provider=None)) + "\n"
            for i in range(4, 9)
        )
    )
    url = f"chdb://?database=ip9_{uuid.uuid4().hex}" if engine == "clickhouse" else str(tmp_path / "l.duckdb")
    with Ledger(url, config=Config()) as ledger:
        once = ledger.ingest(first)
        again = ledger.ingest(first)
        more = ledger.ingest(overlapping)
    assert (once.accepted, once.unpriced) == (6, 3)
    assert (again.accepted, again.duplicates, again.unpriced) == (0, 6, 0)
    assert (more.accepted, more.duplicates, more.unpriced) == (3, 2, 2)
