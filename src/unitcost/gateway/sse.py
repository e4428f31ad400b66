"""Server-sent events: split a byte stream into whole events, read their data, spot the end."""

from __future__ import annotations

from typing import Any

import orjson


class EventSplitter:
    """Feed bytes as they arrive; get back each complete event (bytes ending in a blank line)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        # Normalise on the whole buffer: a CRLF can be split across two chunks.
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        events: list[bytes] = []
        while True:
            cut = self._buffer.find(b"\n\n")
            if cut < 0:
                return events
            events.append(self._buffer[: cut + 2])
            self._buffer = self._buffer[cut + 2 :]

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(raw: bytes) -> tuple[str | None, str]:
    """(event name, data) of one SSE event; data lines are joined with newlines as the spec says."""
    name = None
    data = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" ").decode())
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return name, "\n".join(data)


def json_data(data: str) -> dict[str, Any] | None:
    if not data or data == "[DONE]":
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
