"""docs/event-schema.md, written from `events.FIELDS` so the documentation cannot drift.

    python -m unitcost.schema_doc > docs/event-schema.md

A test compares the file with this output.
"""

from __future__ import annotations

from .events import FIELDS, MAX_COUNT, MAX_TOKENS, PRICED_FIELDS, Field

_GROUPS = {
    "identity": "Identity",
    "what": "What was called",
    "usage": "Usage (totals with subsets)",
    "outcome": "Outcome",
    "attribution": "Attribution",
    "money": "Money reported by the source",
    "priced": "Computed by unitcost when it prices an event (ledger only; sources never set these)",
}

_TYPES = {
    "str": "string",
    "int": "integer",
    "tokens": f"integer, 0 … {MAX_TOKENS:,}",
    "count": f"integer, 0 … {MAX_COUNT:,}",
    "float": "number",
    "bool": "boolean",
    "ts": "timestamp (UTC)",
    "map": "object of strings",
    "money": "decimal USD",
}

_INTRO = f"""# Event schema

One line of a JSONL file, one row of a CSV or Parquet file, one `UsageEvent` in Python:
**one attempt of one LLM call**. This page is generated from `unitcost.events.FIELDS`
(`python -m unitcost.schema_doc`); the ingestion checks, the ledger tables and this page
all come from that one list.

## Rules every record must follow

- `event_id`, `ts` and `model` are required. `event_id` is the idempotency key:
  ingesting the same event again changes nothing, whatever the file.
- Usage is **totals with subsets**, as in OpenTelemetry GenAI and genai-prices:
  `input_tokens` counts every prompt token, and `cache_read_tokens`,
  `cache_write_5m_tokens`, `cache_write_1h_tokens`, `input_audio_tokens` and
  `input_image_tokens` are parts of it; `output_tokens` counts every generated token and
  `reasoning_tokens`, `output_audio_tokens`, `output_image_tokens` are parts of it.
  A record whose parts add up to more than their total is rejected, naming both fields.
  (Anthropic reports uncached input apart: add its cache reads and writes to get
  `input_tokens`. The connectors do this for you.)
- Token counts are non-negative integers up to {MAX_TOKENS:,} (`12.5`, `-40`, `"12"`
  and `NaN` are rejected). Timestamps are RFC 3339 (`2025-09-10T10:00:00Z`,
  `2025-09-10T12:00:00+02:00`); a time without an offset (`2025-09-10 10:00:00`, a
  Parquet timestamp without a time zone) is read as UTC, a number as Unix seconds (a
  number in milliseconds is rejected, saying so). A timestamp more than a few minutes in
  the future, or before 2020, is rejected.
- Unknown fields are rejected with a suggestion (`input_token` → did you mean
  `input_tokens`?), unless you pass `--allow-unknown-fields`: in JSON lines the record,
  in CSV and Parquet the whole file (an unknown column).
- In CSV, tags are columns named `tag.<name>` or a `tags` column holding a JSON object;
  in JSONL and Parquet, a `tags` object (a Parquet map, struct or JSON text).
  The tag `usage_unknown` says the provider reported no usage for the call (the gateway
  sets it): the call is stored unpriced with that reason, not priced as zero tokens.
- Text is UTF-8. A line (or row) with other bytes, say Latin-1 `café`, is rejected,
  naming the byte and its column (the field, in CSV and Parquet).
- A rejected record never stops the file: every rejection names the line (or row),
  the field and the reason, and the good records beside it are kept.
- An `event_id` seen before, in the ledger or earlier in the same command (the same
  file or another), is counted as a duplicate and changes nothing: the first one is kept.
  A JSON object that names a field twice is read with its first value.

## Files

- `unitcost ingest FILE...` takes `.jsonl` (`.ndjson`, `.json`), `.csv` and `.parquet`
  files, and `.jsonl.gz` / `.csv.gz` read as they decompress; `--input-format` names
  the format when the file name does not. `-` reads JSON lines (or `--input-format csv`)
  from standard input, gzip-compressed or not: `zcat day.jsonl.gz | unitcost ingest -`.
  Parquet needs a file (its index is at its end).
- A JSON file whose first character is `[` is one array of events (`json.dump(events, f)`),
  read element by element as it streams, minified or pretty-printed, gzipped or not: a
  rejection then names the element's position in the array (from 1), and an array whose
  structure breaks (not closed, a bracket closing the wrong one, text after it) keeps the
  events before the break and names the file and the line where it broke.
- Files are streamed a block at a time: a file of ten million lines never holds ten
  million events in memory.
- JSON lines and CSV may begin with a byte order mark and end lines with CRLF; the
  last line needs no newline; blank lines (and CSV rows of empty cells, `,,,,`) are
  skipped. A CSV value in double quotes may hold commas and newlines (RFC 4180), and
  the line named in a rejection is still the line of the file the record starts on.
- Parquet columns may have any integer width (signed or not), float, decimal, string,
  dictionary or timestamp type (any unit, with or without a time zone): each value is
  checked as its text would be. Extra columns are refused as unknown fields are.
- A file that cannot be read (missing, a directory, not gzip, an unknown column, a
  header that is not UTF-8) is named with the reason, and the other files of the
  command are still ingested; one that breaks part way (a truncated gzip) keeps the
  records read before the break. The command ends with the counts — accepted,
  duplicates, rejected (and how many of the accepted have no price) — and the first
  `--show` rejections (line, field, reason; with the file when there are several);
  `--rejects FILE` writes every rejection as JSON lines. Exit status: 0 when every
  record went in, 1 when some were rejected, 2 when a file could not be read.

## Example

```json
{{"event_id": "req-8f2c", "ts": "2025-09-10T10:00:00Z", "provider": "anthropic",
 "model": "claude-sonnet-4-5", "input_tokens": 30000, "cache_read_tokens": 25000,
 "output_tokens": 800, "team": "support", "feature": "reply-draft",
 "unit": "ticket", "unit_id": "T-1042", "tags": {{"region": "eu"}}}}
```

## How a record is priced

- `model` is looked up as the call named it, with or without its provider in front:
  `gpt-4o`, `openai/gpt-4o` (LiteLLM), `openai:gpt-4o` (pydantic-ai),
  `gpt-4o-2024-08-06`; `served_model` first when it is set. `provider` chooses between
  providers that list the same model (`azure`, `openrouter`, ...).
- The price is the one in force at `ts` for `service_tier`, from the layered price book
  (docs/pricing.md). A call no price applies to is stored with `cost` NULL and
  `unpriced_reason`, never as $0.
- `price_ref` names the price, then each tier rule and discount applied to it, joined by
  `|`: `genai-prices:openai/gpt-4o|unitcost:openai[batch]x0.5@2024-04-15` is genai-prices'
  gpt-4o price at unitcost's batch rule of 2024-04-15; a `|user:discount(...)` part is a
  discount from your overrides file.
"""


def _row(f: Field) -> str:
    notes = []
    if f.required:
        notes.append("**required**")
    if f.default is not None:
        notes.append(f"default `{str(f.default).lower() if isinstance(f.default, bool) else f.default}`")
    if f.choices:
        notes.append("one of " + ", ".join(f"`{c}`" for c in f.choices))
    doc = f.doc.replace("|", "\\|")
    return f"| `{f.name}` | {_TYPES[f.kind]} | {'; '.join(notes)} | {doc} |"


def render() -> str:
    parts = [_INTRO]
    for group, title in _GROUPS.items():
        fields = [f for f in (*FIELDS, *PRICED_FIELDS) if f.group == group]
        if not fields:
            continue
        parts.append(f"## {title}\n")
        parts.append("| field | type | | meaning |")
        parts.append("| --- | --- | --- | --- |")
        parts.extend(_row(f) for f in fields)
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
