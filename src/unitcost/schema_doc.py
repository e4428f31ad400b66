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
  and `NaN` are rejected). Timestamps are RFC 3339 (`2025-09-10T10:00:00Z`); a time
  without an offset is read as UTC, a number as Unix seconds. A timestamp more than a
  few minutes in the future, or before 2020, is rejected.
- Unknown fields are rejected with a suggestion (`input_token` → did you mean
  `input_tokens`?), unless you pass `--allow-unknown-fields`.
- In CSV, tags are columns named `tag.<name>`; in JSONL and Parquet, a `tags` object.
  The tag `usage_unknown` says the provider reported no usage for the call (the gateway
  sets it): the call is stored unpriced with that reason, not priced as zero tokens.
- Text is UTF-8. A line (or row) with other bytes, say Latin-1 `café`, is rejected,
  naming the byte and its column (the field, in CSV and Parquet).
- A rejected record never stops the file: every rejection names the line (or row),
  the field and the reason, and the good records beside it are kept.

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
