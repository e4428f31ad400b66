"""History from other tools: LiteLLM SpendLogs, Langfuse observations, OpenAI's usage export.

Each importer maps one item of the tool's export to one event (or skips it when it is not
a model call) and names the field and reason when it cannot. The mapped events then take
the one ingest path, so they are checked and priced like every other event; the tool's
own cost is kept as `billed_cost` for `unitcost reconcile`.

A file that cannot be read as a whole (not JSON, not CSV) is refused before anything is
written; a bad item is rejected alone and named by its position in the file.

Only usage, cost, time and attribution are read: request and response bodies (LiteLLM's
`messages`, `response`, `proxy_server_request`; Langfuse's `input`, `output`), headers and
metadata are never looked at, and LiteLLM's `api_key` (a hash of the virtual key) is not kept.
The few free tags taken from an item pass `redact.tag_value` like every other source's.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import orjson

from ..events import MAX_TOKENS
from ..ingest.normalise import Rejection
from ..ingest.readers import JSON_SPACE, JsonArrayError, json_array_items
from ..redact import redact_tags
from ..utc import as_utc

if TYPE_CHECKING:
    from ..api import Ledger


class ItemError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class ImportFileError(ValueError):
    """The file as a whole cannot be read: nothing is written."""


@dataclass
class ImportResult:
    read: int = 0
    skipped: int = 0
    accepted: int = 0
    duplicates: int = 0
    unpriced: int = 0
    rejected: int = 0
    """Every rejected item; `rejections` keeps the first KEPT_REJECTIONS of them, in file order."""
    rejections: list[Rejection] = field(default_factory=list)
    lines: dict[int, int] = field(default_factory=dict)
    """Item number -> the file line it starts on, for the kept rejections of line-oriented files
    (JSON lines, CSV), where blank lines, the header and quoted line breaks make the two differ."""

    def reject(self, rejection: Rejection, line: int | None) -> None:
        self.rejected += 1
        if len(self.rejections) < KEPT_REJECTIONS:
            self.rejections.append(rejection)
            if line is not None:
                self.lines[rejection.record] = line

    def where(self, rejection: Rejection) -> str:
        line = self.lines.get(rejection.record)
        return f"item {rejection.record}" + (f" (line {line})" if line is not None else "")


KEPT_REJECTIONS = 1_000
BATCH = 50_000
"""Events mapped and ingested at a time: a file of any size is imported in bounded memory."""

# --------------------------------------------------------------------------- reading files


_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
# LiteLLM's CSV exports carry whole prompts and answers in a column; Python's csv module refuses
# a field over 128 KiB by default, which would refuse the whole file for one long conversation.
_CSV_FIELD_LIMIT = 1 << 30


def read_items(path: Path) -> list[Any]:
    """Items of a JSON array, a JSON object (its `data`), JSON lines, or CSV rows (as dicts of text).

    The file may be gzipped (recognised by its first bytes, whatever its name) and may start
    with a UTF-8 byte order mark; an empty file has no items."""
    return [item for item, _ in iter_items(path)]


def iter_items(path: Path) -> Iterator[tuple[Any, int | None]]:
    """(item, the line it starts on) of the file, read as it goes for JSON lines, CSV and a JSON
    array, which may be of any size; a JSON object (an API page with `data`) is read whole, its
    items have no line. Raises ImportFileError when the file cannot be read as such."""
    shape = _shape(path)
    if shape == "csv":
        yield from _csv_rows(path)
    elif shape == "jsonl":
        yield from _json_lines(path)
    elif shape == "array":
        yield from _array_items(path)
    else:
        yield from ((item, None) for item in _document(path))


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    return cast(IO[bytes], gzip.open(path, "rb")) if gzipped else path.open("rb")


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines, decompressed, without a leading byte order mark."""
    try:
        with _open(path) as stream:
            first = True
            for line in stream:
                yield line.removeprefix(_UTF8_BOM) if first else line
                first = False
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportFileError(f"{path.name}: not a readable gzip file ({exc})") from exc


def _shape(path: Path) -> str:
    """ "array" (one JSON array), "document" (one JSON object), "jsonl" or "csv", from the file's
    first byte that is not whitespace, then its first two non-blank lines."""
    if _first_byte(path) == b"[":  # before reading lines: a minified array is one line, the whole file
        return "array"
    seen: list[bytes] = []
    for line in _lines(path):
        if line.strip():
            seen.append(line.strip())
            if len(seen) == 2:
                break
    if not seen:
        return "document"  # empty: no items
    if seen[0][:1] != b"{":
        return "csv"
    if len(seen) == 2 and _parses(seen[0]):
        return "jsonl"
    return "document"  # one object, pretty-printed or on one line (an API page with `data`)


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _first_byte(path: Path) -> bytes:
    """The first byte of the (decompressed) file that is not whitespace or a byte order mark."""
    for line in _blocks(path):
        content = line.removeprefix(_UTF8_BOM).lstrip(JSON_SPACE)
        if content:
            return content[:1]
    return b""


def _blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, decompressed, a block at a time."""
    try:
        with _open(path) as stream:
            while block := stream.read(size):
                yield block
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportFileError(f"{path.name}: not a readable gzip file ({exc})") from exc


def _array_elements(path: Path) -> Iterator[tuple[bytes, int]]:
    """The text of each element of the JSON array the file holds, and its line, read as it goes."""
    blocks = _blocks(path)
    first = True

    def read(_size: int) -> bytes:
        nonlocal first
        block = next(blocks, b"")
        block, first = (block.removeprefix(_UTF8_BOM) if first else block), False
        return block

    try:
        yield from json_array_items(read)
    except JsonArrayError as exc:
        raise ImportFileError(f"{path.name}: not valid JSON: {exc}") from None


def _array_items(path: Path) -> Iterator[tuple[Any, int | None]]:
    """The items of a JSON array, parsed one at a time: a file of any size is never held whole.
    An element that is not valid JSON is that item's rejection, as a bad line of JSON lines is.
    Items have no line: the item's position says where it is (a minified array is one line)."""
    for text, _ in _array_elements(path):
        try:
            yield orjson.loads(text), None
        except orjson.JSONDecodeError as exc:
            yield _BadLine(f"malformed JSON ({exc})"), None


def _document(path: Path) -> list[Any]:
    raw = b"".join(_lines(path))
    if not raw.strip():
        return []
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if raw.lstrip()[:1] == b"{":  # objects one per line, the first of them malformed
            return [item for item, _ in _json_lines(path)]
        raise ImportFileError(f"{path.name}: not valid JSON") from None
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        data = document.get("data")
        return data if isinstance(data, list) else [document]
    raise ImportFileError(f"{path.name}: not valid JSON")


def _csv_rows(path: Path) -> Iterator[tuple[Any, int | None]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    text = io.TextIOWrapper(io.BufferedReader(_LineStream(_lines(path))), encoding="utf-8", newline="")
    reader = csv.DictReader(text)
    try:
        if not reader.fieldnames:
            raise ImportFileError(f"{path.name}: empty, or not CSV/JSON")
        ended = reader.line_num
        for row in reader:
            yield row, ended + 1
            ended = reader.line_num
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path.name}: not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise ImportFileError(f"{path.name}: not valid CSV (line {reader.line_num}: {exc})") from exc


class _LineStream(io.RawIOBase):
    """Lines as a readable byte stream, for the text decoder in front of the CSV reader."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            line = next(self._lines, None)
            if line is None:
                return 0
            self._rest = line
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


class _BadLine:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _json_lines(path: Path) -> Iterator[tuple[Any, int | None]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line), number
        except orjson.JSONDecodeError as exc:
            yield _BadLine(f"malformed JSON ({exc})"), number


# --------------------------------------------------------------------------- field helpers


def _obj(value: Any, name: str) -> Mapping[str, Any]:
    """A nested object, which CSV exports carry as JSON text."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ItemError(name, "expected a JSON object") from exc
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ItemError(name, f"expected an object, got {type(value).__name__}")
    return value


def _count(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ItemError(name, f"expected a count, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ItemError(name, f"expected a whole count, got {value!r}")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise ItemError(name, f"expected a count, got {value[:40]!r}") from exc
    if not isinstance(value, int):
        raise ItemError(name, f"expected a count, got {type(value).__name__}")
    if value < 0:
        raise ItemError(name, f"negative count {value}")
    if value > MAX_TOKENS:
        raise ItemError(name, f"{value} is larger than any real count (limit {MAX_TOKENS:,})")
    return value


def _money(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ItemError(name, f"expected an amount, got {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ItemError(name, f"not an amount: {str(value)[:40]!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ItemError(name, f"not a valid cost: {value!r}")
    return amount


def _time(value: Any, name: str) -> datetime:
    if value is None or value == "":
        raise ItemError(name, "missing")
    if isinstance(value, bool):
        raise ItemError(name, f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
        if number > 1e11:  # milliseconds
            number /= 1000
        try:
            return datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ItemError(name, f"not a Unix time: {value!r}") from exc
    if not isinstance(value, str):
        raise ItemError(name, f"not a timestamp: {type(value).__name__}")
    text = value.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ItemError(name, f"not a timestamp: {value[:40]!r}") from exc
    return as_utc(when)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _first(item: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = item.get(name)
        if value is not None and value != "":
            return value
    return None


# --------------------------------------------------------------------------- LiteLLM

LITELLM_PROVIDERS = {
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "gemini": "google",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "azure": "azure",
    "azure_ai": "azure",
    "mistral": "mistral",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}
_LITELLM_OPERATIONS = {
    "embedding": "embeddings",
    "responses": "responses",
    "text_completion": "text_completion",
}


def _litellm_prompt_total(prompt: int, cache_read: int, cache_write: int) -> int:
    """The whole prompt, from LiteLLM's `prompt_tokens` for an Anthropic-style call.

    LiteLLM converts Anthropic's uncached `input_tokens` to a total, but not the same way in
    every release: recent ones add the cache reads and the cache writes, some 2025 releases
    added the cache reads only. A count smaller than the reads is the raw uncached count; one
    that holds the reads but not the reads and writes together lacks the writes. Adding the
    reads again there would count every cached token twice."""
    if prompt < cache_read:
        return prompt + cache_read + cache_write
    if prompt < cache_read + cache_write:
        return prompt + cache_write
    return prompt


def _litellm_1h_writes(usage: Mapping[str, Any], prompt_details: Mapping[str, Any]) -> int:
    """Cache writes with Anthropic's 1-hour lifetime, wherever the LiteLLM release put the split."""
    where = "metadata.usage_object.prompt_tokens_details.cache_creation_token_details"
    split = _obj(prompt_details.get("cache_creation_token_details"), where)
    if not split:
        where = "metadata.usage_object.cache_creation"
        split = _obj(usage.get("cache_creation"), where)
    return _count(split.get("ephemeral_1h_input_tokens"), f"{where}.ephemeral_1h_input_tokens")


def litellm_event(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """One LiteLLM_SpendLogs row. `spend` -> billed_cost; `api_key` (a hash) is never stored."""
    request_id = _text(item.get("request_id"))
    if request_id is None:
        raise ItemError("request_id", "missing")
    model = _text(_first(item, "model", "model_group"))
    if model is None:
        raise ItemError("model", "missing")
    metadata = _obj(item.get("metadata"), "metadata")
    usage = _obj(metadata.get("usage_object"), "metadata.usage_object")
    prompt = _count(_first(usage, "prompt_tokens") or item.get("prompt_tokens"), "prompt_tokens")
    completion = _count(
        _first(usage, "completion_tokens") or item.get("completion_tokens"), "completion_tokens"
    )
    prompt_details = _obj(usage.get("prompt_tokens_details"), "metadata.usage_object.prompt_tokens_details")
    completion_details = _obj(
        usage.get("completion_tokens_details"), "metadata.usage_object.completion_tokens_details"
    )
    cache_read = _count(
        _first(prompt_details, "cached_tokens") or usage.get("cache_read_input_tokens"),
        "metadata.usage_object.cache_read_input_tokens",
    )
    cache_write = _count(
        _first(usage, "cache_creation_input_tokens") or prompt_details.get("cache_creation_tokens"),
        "metadata.usage_object.cache_creation_input_tokens",
    )
    prompt = _litellm_prompt_total(prompt, cache_read, cache_write)
    write_1h = min(_litellm_1h_writes(usage, prompt_details), cache_write)
    start = _time(item.get("startTime"), "startTime")
    event: dict[str, Any] = {
        "event_id": f"litellm:{request_id}",
        "ts": start,
        "model": model,
        "input_tokens": prompt,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cache_write - write_1h,
        "cache_write_1h_tokens": write_1h,
        "output_tokens": completion,
        "reasoning_tokens": _count(
            completion_details.get("reasoning_tokens"),
            "metadata.usage_object.completion_tokens_details.reasoning_tokens",
        ),
        "billed_cost": _money(item.get("spend"), "spend"),
        "team": _text(_first(item, "team_id", "team_alias")),
        "user": _text(_first(item, "end_user", "user")),
        "session_id": _text(item.get("session_id")),
        "trace_id": _text(item.get("trace_id")),
    }
    provider = _text(item.get("custom_llm_provider"))
    if provider:
        event["provider"] = LITELLM_PROVIDERS.get(provider, provider)
    call_type = (_text(item.get("call_type")) or "completion").lower().removeprefix("a")
    event["operation"] = _LITELLM_OPERATIONS.get(call_type, "chat")
    if item.get("endTime"):
        end = _time(item.get("endTime"), "endTime")
        event["latency_ms"] = max((end - start).total_seconds() * 1000.0, 0.0)
    status = (_text(item.get("status")) or "success").lower()
    event["status"] = "ok" if status == "success" else "error"
    if str(item.get("cache_hit", "")).lower() == "true":
        event["cache_hit"] = True
    tags = item.get("request_tags")
    if isinstance(tags, str) and tags.strip().startswith("["):
        try:
            tags = orjson.loads(tags)
        except orjson.JSONDecodeError as exc:
            raise ItemError("request_tags", "expected a JSON list of tags") from exc
    if isinstance(tags, list) and tags:
        event["tags"] = redact_tags({"request_tags": ",".join(str(t) for t in tags)})
    return {k: v for k, v in event.items() if v is not None}


# --------------------------------------------------------------------------- Langfuse

_LANGFUSE_MODEL_CALLS = {"GENERATION", "EMBEDDING"}


@dataclass
class _LangfuseUsage:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    reasoning: int = 0
    input_audio: int = 0
    output_audio: int = 0


def _langfuse_usage(counts: Mapping[str, int]) -> _LangfuseUsage:
    """Langfuse's usage types are free names, disjoint (their sum is the total). Langfuse itself
    reads every type whose name contains `input` as input and `output` as output; the parts are
    recognised the same way, by the words in their names (`input_cached_tokens`,
    `cache_read_input_tokens`, `cache_write_input_tokens`, `input_cache_creation_1h`, ...)."""
    usage = _LangfuseUsage()
    for name, value in counts.items():
        key = name.lower()
        if key in ("reasoning", "reasoning_tokens"):  # some SDKs omit the `output_` prefix
            usage.output += value
            usage.reasoning += value
            continue
        if "input" in key:
            usage.input += value
            if "cache" in key and ("creation" in key or "write" in key):
                if "1h" in key:
                    usage.write_1h += value
                else:
                    usage.write_5m += value
            elif "cached" in key or ("cache" in key and "read" in key):
                usage.cache_read += value
            elif "audio" in key:
                usage.input_audio += value
        elif "output" in key:
            usage.output += value
            if "reasoning" in key:
                usage.reasoning += value
            elif "audio" in key:
                usage.output_audio += value
    return usage


def langfuse_event(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """One Langfuse observation. Its usage types are disjoint (their sum is the total), so the
    input total is `input` plus every input-side type, and likewise for output."""
    kind = (_text(item.get("type")) or "").upper()
    if kind and kind not in _LANGFUSE_MODEL_CALLS:
        return None
    ident = _text(item.get("id"))
    if ident is None:
        raise ItemError("id", "missing")
    usage = dict(_obj(_first(item, "usage_details", "usageDetails"), "usage_details"))
    if not usage:
        legacy = _obj(item.get("usage"), "usage")
        usage = {k: v for k, v in legacy.items() if k in ("input", "output")}
    model = _text(_first(item, "provided_model_name", "providedModelName", "model"))
    if model is None:
        if not usage and not kind:
            return None
        raise ItemError("model", "missing (a generation without its model cannot be priced)")
    counts = {str(k): _count(v, f"usage_details.{k}") for k, v in usage.items()}
    parts = _langfuse_usage(counts)
    cost = _obj(_first(item, "cost_details", "costDetails"), "cost_details")
    billed = _money(
        _first(cost, "total") or _first(item, "calculated_total_cost", "calculatedTotalCost", "total_cost"),
        "cost_details.total",
    )
    start = _time(_first(item, "start_time", "startTime"), "start_time")
    event: dict[str, Any] = {
        "event_id": f"langfuse:{ident}",
        "ts": start,
        "model": model,
        "operation": "embeddings" if kind == "EMBEDDING" else "chat",
        "input_tokens": parts.input,
        "cache_read_tokens": parts.cache_read,
        "cache_write_5m_tokens": parts.write_5m,
        "cache_write_1h_tokens": parts.write_1h,
        "input_audio_tokens": parts.input_audio,
        "output_tokens": parts.output,
        "reasoning_tokens": parts.reasoning,
        "output_audio_tokens": parts.output_audio,
        "billed_cost": billed,
        "trace_id": _text(_first(item, "trace_id", "traceId")),
        "parent_id": _text(_first(item, "parent_observation_id", "parentObservationId")),
        "environment": _text(item.get("environment")),
        "user": _text(_first(item, "user_id", "userId")),
        "session_id": _text(_first(item, "session_id", "sessionId")),
    }
    end = _first(item, "end_time", "endTime")
    if end:
        event["latency_ms"] = max((_time(end, "end_time") - start).total_seconds() * 1000.0, 0.0)
    first_token = _first(item, "completion_start_time", "completionStartTime")
    if first_token:
        event["ttft_ms"] = max(
            (_time(first_token, "completion_start_time") - start).total_seconds() * 1000.0, 0.0
        )
    if (_text(item.get("level")) or "").upper() == "ERROR":
        event["status"] = "error"
    name = _text(item.get("name"))
    if name:
        event["tags"] = redact_tags({"langfuse_name": name})
    return {k: v for k, v in event.items() if v is not None}


# --------------------------------------------------------------------------- OpenAI usage export


def _openai_results(
    items: Iterable[tuple[Any, int | None]],
) -> Iterator[tuple[Any, Mapping[str, Any] | None, int | None]]:
    """(result, its bucket, the line it is on); pages, bucket lists and bare results are all accepted."""
    for item, line in items:
        if isinstance(item, Mapping) and item.get("object") == "page":
            yield from _openai_results((page_item, line) for page_item in list(item.get("data") or []))
        elif isinstance(item, Mapping) and item.get("object") == "bucket":
            results = item.get("results") or item.get("result") or []
            if not isinstance(results, list):
                yield results, item, line
                continue
            for result in results:
                yield result, item, line
        else:
            yield item, None, line


def _openai_usage_cache_writes(result: Mapping[str, Any]) -> dict[str, int]:
    """Cache writes are part of `input_tokens`: 30-minute retention in the short write column,
    12-hour retention in the long one (without a write price both cost the input price)."""
    return {
        "cache_write_5m_tokens": _count(result.get("input_cache_write_tokens"), "input_cache_write_tokens"),
        "cache_write_1h_tokens": _count(
            result.get("input_cache_write_12h_tokens"), "input_cache_write_12h_tokens"
        ),
    }


def _openai_usage_modality(result: Mapping[str, Any], kind: str) -> dict[str, int]:
    """Audio or image input. The export reports the uncached part (`input_audio_tokens`) beside the
    cached one (`input_cached_audio_tokens`); the ledger keeps all of it, and the cached part apart."""
    name, cached_name = f"input_{kind}_tokens", f"input_cached_{kind}_tokens"
    cached = _count(result.get(cached_name), cached_name)
    return {name: _count(result.get(name), name) + cached, f"cache_{kind}_read_tokens": cached}


def openai_usage_event(result: Mapping[str, Any], bucket: Mapping[str, Any] | None) -> dict[str, Any] | None:
    kind = str(result.get("object", ""))
    if kind and not kind.startswith("organization.usage."):
        raise ItemError("object", f"not a usage result: {kind[:60]!r}")
    operation = "embeddings" if kind.endswith(".embeddings.result") else "chat"
    model = _text(result.get("model"))
    if model is None:
        raise ItemError("model", "missing: export the usage grouped by model (group_by=model)")
    requests = _count(result.get("num_model_requests"), "num_model_requests")
    input_tokens = _count(result.get("input_tokens"), "input_tokens")
    output_tokens = _count(result.get("output_tokens"), "output_tokens")
    if requests == 0 and input_tokens == 0 and output_tokens == 0:
        return None
    start = (bucket or {}).get("start_time", result.get("start_time"))
    ts = _time(start, "start_time")
    tier = _text(result.get("service_tier"))
    if result.get("batch") is True:
        tier = "batch"
    key = orjson.dumps(
        [
            ts.isoformat(),
            (bucket or {}).get("end_time"),
            kind,
            model,
            result.get("project_id"),
            result.get("user_id"),
            result.get("api_key_id"),
            result.get("batch"),
            tier,
            # Present only when the export is grouped by it; then it tells two results apart.
            *([result["api_source"]] if result.get("api_source") is not None else []),
        ]
    )
    event: dict[str, Any] = {
        "event_id": "openai-usage:" + hashlib.sha256(key).hexdigest()[:32],
        "ts": ts,
        "provider": "openai",
        "model": model,
        "operation": operation,
        "service_tier": tier if tier in ("batch", "flex", "priority") else "standard",
        "input_tokens": input_tokens,
        "cache_read_tokens": _count(result.get("input_cached_tokens"), "input_cached_tokens"),
        **_openai_usage_cache_writes(result),
        **_openai_usage_modality(result, "audio"),
        **_openai_usage_modality(result, "image"),
        "output_tokens": output_tokens,
        "output_audio_tokens": _count(result.get("output_audio_tokens"), "output_audio_tokens"),
        "output_image_tokens": _count(result.get("output_image_tokens"), "output_image_tokens"),
        "requests": max(requests, 1),
        "user": _text(result.get("user_id")),
    }
    tags = {
        name: str(result[name])
        for name in ("project_id", "api_key_id", "api_source")
        if _text(result.get(name)) is not None
    }
    if tags:
        event["tags"] = redact_tags(tags)
    return {k: v for k, v in event.items() if v is not None}


# --------------------------------------------------------------------------- driver

Mapper = Callable[[Mapping[str, Any]], dict[str, Any] | None]
IMPORTERS: Mapping[str, Mapper] = {"litellm": litellm_event, "langfuse": langfuse_event}
KINDS = ("litellm", "langfuse", "openai-usage")


_Outcome = dict[str, Any] | Rejection | None
"""An item's event, its rejection, or None when it is skipped (not a model call)."""


def map_items(kind: str, items: list[Any]) -> tuple[list[dict[str, Any]], list[int], list[Rejection], int]:
    """(events, item position of each event, rejections, skipped)."""
    events: list[dict[str, Any]] = []
    positions: list[int] = []
    rejections: list[Rejection] = []
    skipped = 0
    for position, _, outcome in _mapped(kind, ((item, None) for item in items)):
        if outcome is None:
            skipped += 1
        elif isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
            positions.append(position)
    return events, positions, rejections, skipped


def _mapped(kind: str, items: Iterable[tuple[Any, int | None]]) -> Iterator[tuple[int, int | None, _Outcome]]:
    """(item position, its line, outcome) of every item, in file order."""
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; expected one of {', '.join(KINDS)}")
    triples: Iterable[tuple[Any, Mapping[str, Any] | None, int | None]] = (
        _openai_results(items) if kind == "openai-usage" else ((item, None, line) for item, line in items)
    )
    for position, (item, bucket, line) in enumerate(triples, start=1):
        yield position, line, _outcome(kind, position, item, bucket)


def _outcome(kind: str, position: int, item: Any, bucket: Mapping[str, Any] | None) -> _Outcome:
    if isinstance(item, _BadLine):
        return Rejection(position, "record", item.reason)
    if not isinstance(item, Mapping):
        return Rejection(position, "record", f"expected an object, got {type(item).__name__}")
    try:
        return openai_usage_event(item, bucket) if kind == "openai-usage" else IMPORTERS[kind](item)
    except ItemError as exc:
        return Rejection(position, exc.field, exc.reason)


def import_file(ledger: Ledger, kind: str, path: str | Path) -> ImportResult:
    """Import a file of any size: its items are mapped and ingested a batch at a time. A file that
    cannot be read to its end (a corrupt gzip, broken CSV quoting, text that is not UTF-8) is
    refused before anything is written."""
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; expected one of {', '.join(KINDS)}")
    _check_readable(path)
    result = ImportResult()
    batch = _Batch(ledger, f"import:{kind}:{path.name}", result)
    for position, line, outcome in _mapped(kind, iter_items(path)):
        result.read += 1
        if outcome is None:
            result.skipped += 1
        elif isinstance(outcome, Rejection):
            result.reject(outcome, line)
        else:
            batch.add(outcome, position, line)
    batch.ingest()
    result.rejections.sort(key=lambda r: r.record)
    return result


def _check_readable(path: Path) -> None:
    """Read a streamed file through once (cheaply: no mapping) so that a fault near its end refuses
    it before the first batch is written. A JSON array's structure is read (its elements are not
    parsed: a broken one is rejected alone); a JSON object is parsed whole before its first item."""
    shape = _shape(path)
    if shape == "csv":
        for _ in _csv_rows(path):
            pass
    elif shape == "array":
        for _ in _array_elements(path):
            pass
    elif shape == "jsonl" and _gzipped(path):  # a plain file's lines cannot fail to read
        for _ in _lines(path):
            pass


def _gzipped(path: Path) -> bool:
    with path.open("rb") as probe:
        return probe.read(2) == _GZIP_MAGIC


class _Batch:
    """Mapped events waiting to be ingested, with where each came from in the file."""

    def __init__(self, ledger: Ledger, source: str, result: ImportResult) -> None:
        self._ledger = ledger
        self._source = source
        self._result = result
        self._events: list[dict[str, Any]] = []
        self._origins: list[tuple[int, int | None]] = []

    def add(self, event: dict[str, Any], position: int, line: int | None) -> None:
        self._events.append(event)
        self._origins.append((position, line))
        if len(self._events) >= BATCH:
            self.ingest()

    def ingest(self) -> None:
        if not self._events:
            return
        summary = self._ledger.ingest_records(self._events, source=self._source)
        result = self._result
        result.accepted += summary.accepted
        result.duplicates += summary.duplicates
        result.unpriced += summary.unpriced
        result.rejected += summary.rejected - len(summary.rejections)  # those beyond the summary's list
        for rejection in summary.rejections:
            position, line = self._origins[rejection.record - 1]
            result.reject(Rejection(position, rejection.field, rejection.reason), line)
        self._events, self._origins = [], []
