"""A small HTTP/1.1 server for the gateway and the simulator: httptools parsing on an asyncio
(uvloop) protocol, one handler coroutine per request.

Why not uvicorn with an ASGI framework: on the benchmark machine uvicorn's ASGI cycle (scope
and message dicts, a cycle object, events and middleware per request) cost about 120 µs of
CPU per request more than this server, a third of everything the gateway does for a request.
This server does only what the gateway and the simulator need:

- HTTP/1.1 keep-alive (and 1.0), request bodies by length or chunked, pipelined requests
  answered in order;
- a request body limit: an oversized body is read and dropped (memory stays bounded) and the
  handler answers it (`Request.too_large`), in its own API's error format;
- `Expect: 100-continue`;
- fixed responses in one `write`, streamed responses in chunked encoding with backpressure;
  a stream whose client goes away is cancelled, so the handler's cleanup runs;
- idle connections closed after `keep_alive_s`; on SIGTERM/SIGINT, no new connections,
  requests in flight finish (up to `grace_s`), then `on_shutdown` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger("unitcost.gateway.http")

MAX_PIPELINED = 16
"""Requests parsed ahead of the one being answered before reading from the socket pauses."""


class Request:
    __slots__ = ("body", "headers", "method", "path", "query", "too_large")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, too_large: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        """Lower-case names; a repeated header's values joined with ", "."""
        self.body = body
        self.too_large = too_large
        """The body was over the server's limit and was dropped (`body` is empty)."""


class Response:
    __slots__ = ("body", "content_type", "headers", "status", "stream")

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        stream: AsyncIterable[bytes] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers if headers is not None else {}
        """Lower-case names."""
        self.content_type = content_type
        self.stream = stream
        """When set, the body is these chunks (sent with chunked transfer encoding)."""


Handler = Callable[[Request], Awaitable[Response]]

_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Clock:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._text = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = formatdate(now, usegmt=True)
        return self._text


_CLOCK = _Clock()


def _head(response: Response, length: int | None, keep_alive: bool) -> bytes:
    status = response.status
    parts = [
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}\r\ndate: {_CLOCK.date()}\r\n"
        f"content-type: {response.content_type}\r\n"
    ]
    if length is None:
        parts.append("transfer-encoding: chunked\r\n")
    else:
        parts.append(f"content-length: {length}\r\n")
    for name, value in response.headers.items():
        parts.append(f"{name}: {value}\r\n")
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        """Kept: looking it up per request costs a getpid(2) (asyncio checks for a fork)."""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.busy = False
        self.streaming = False
        self.task: asyncio.Task[None] | None = None
        self.queue: deque[tuple[Request, bool]] = deque()
        self.last_active = time.monotonic()
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.streaming and self.task is not None:
            self.task.cancel()  # the client went away mid-stream: stop relaying it
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError("client disconnected"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        declared = self._headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.server.max_body_bytes:
            self._too_large = True
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            if self._too_large:
                # The client waits for our word before sending the body: answer now and close.
                self._respond_early()
                return
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        request = Request(
            self.parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            b"".join(self._body),
            self._too_large,
        )
        self.queue.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self._next()
        elif len(self.queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True

    # ------------------------------------------------------------------ answering

    def _next(self) -> None:
        request, keep_alive = self.queue.popleft()
        self.busy = True
        self.task = self.loop.create_task(self._answer(request, keep_alive))
        if self.read_paused and len(self.queue) <= MAX_PIPELINED // 2 and self.transport is not None:
            self.transport.resume_reading()
            self.read_paused = False

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            try:
                response = await self.server.handler(request)
            except Exception:
                log.exception("unhandled error answering %s %s", request.method, request.path)
                response = Response(b'{"error": {"message": "internal error", "type": "api_error"}}', 500)
            if self.closed or self.transport is None:
                if response.stream is not None:
                    await _close_stream(response.stream)
                return
            keep_alive = keep_alive and not self.server.stopping
            if response.stream is None:
                body = b"" if request.method == "HEAD" else response.body
                self.transport.write(_head(response, len(response.body), keep_alive) + body)
            else:
                self.transport.write(_head(response, None, keep_alive))
                await self._relay(response.stream)
        except asyncio.CancelledError:
            self.closed = True  # the client went away; the stream's own cleanup has run
        except Exception as exc:
            if not self.closed:
                # The body's source failed midway (an upstream stream broke or stalled). The
                # head and part of the body are out, so no error status can follow: closing
                # the connection without the last chunk is how HTTP says the body is incomplete,
                # and the client learns it now rather than when its own read timeout fires.
                log.warning("%s %s: response stream failed: %r", request.method, request.path, exc)
                if self.transport is not None:
                    self.transport.close()
            self.closed = True
        finally:
            self.busy = False
            self.task = None
            self.last_active = time.monotonic()
        if self.closed:
            return
        if not keep_alive:
            if self.transport is not None:
                self.transport.close()
            self.closed = True
        elif self.queue:
            self._next()

    async def _relay(self, stream: AsyncIterable[bytes]) -> None:
        assert self.transport is not None
        self.streaming = True
        try:
            async for chunk in stream:
                if not chunk:
                    continue
                self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self.write_paused:
                    self.drained = self.loop.create_future()
                    await self.drained
            self.transport.write(b"0\r\n\r\n")
        finally:
            self.streaming = False
            await _close_stream(stream)

    def _reject(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        body = b'{"error": {"message": "%s", "type": "invalid_request_error"}}' % message.encode()
        if not self.busy:
            self.transport.write(_head(Response(body, status), len(body), False) + body)
        self.transport.close()
        self.closed = True

    def _respond_early(self) -> None:
        request = Request(
            self.parser.get_method().decode("latin-1"),
            self._url.decode("latin-1").partition("?")[0],
            "",
            self._headers,
            b"",
            True,
        )
        self.queue.clear()
        if not self.busy:
            self.busy = True
            self.task = self.loop.create_task(self._answer(request, False))
        if self.transport is not None:
            self.transport.pause_reading()


async def _close_stream(stream: AsyncIterable[bytes]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = 4 * 1024 * 1024,
        keep_alive_s: float = 75.0,
        grace_s: float = 30.0,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.keep_alive_s = keep_alive_s
        self.grace_s = grace_s
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(
        self, host: str, port: int, backlog: int = 4096, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on host:port, or on `sock`, a socket already bound (so that a port in use was
        found before anything else started)."""
        loop = asyncio.get_running_loop()
        factory = lambda: _Connection(self)  # noqa: E731 - one factory for both forms
        if sock is not None:
            self._server = await loop.create_server(factory, sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(factory, host, port, backlog=backlog)
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than keep_alive_s."""
        while True:
            await asyncio.sleep(min(self.keep_alive_s / 4, 5.0))
            cutoff = time.monotonic() - self.keep_alive_s
            for conn in list(self.connections):
                if not conn.busy and not conn.queue and conn.last_active < cutoff and conn.transport:
                    conn.transport.close()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to grace_s), close everything."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + self.grace_s
        while True:
            for conn in list(self.connections):
                if not conn.busy and not conn.queue and conn.transport is not None:
                    conn.transport.close()
            if not self.connections or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.abort()


async def serve_until_stopped(
    server: HttpServer,
    host: str,
    port: int,
    stop: asyncio.Event,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[], Any] | None = None,
    sock: socket.socket | None = None,
) -> None:
    await server.start(host, port, sock=sock)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        await server.stop()
        if on_shutdown is not None:
            await on_shutdown()


def settle_heap() -> None:
    """Move everything loaded at start (price book, tokenizer, modules) out of the collector's
    sight, and collect young objects less often.

    A server process starts with hundreds of thousands of long-lived objects; without this,
    every full collection walks all of them with the event loop stopped (a latency spike for
    every request in flight), and the default young-generation threshold (700 allocations)
    runs a collection every few requests. Request objects die young and rarely form cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body_bytes: int = 4 * 1024 * 1024,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    on_ready: Callable[[], Any] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, on uvloop where it exists (on `sock` if given: bound already)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is not built for Windows
        loop_factory = asyncio.new_event_loop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = HttpServer(handler, max_body_bytes=max_body_bytes)
        await serve_until_stopped(server, host, port, stop, on_shutdown, on_ready, sock)

    settle_heap()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
