"""The pooled upstream client: only configured upstreams, keys from the environment only.

HTTP/1.1 over keep-alive connections, parsed by httptools (the parser uvicorn uses), one
asyncio protocol per connection. A general client (httpx, then aiohttp) spent more CPU per
request than the rest of the gateway: httpx in choosing a pooled connection, aiohttp in its
request/response objects, timers and payload machinery. The gateway only ever POSTs JSON to a
handful of configured base URLs, so this client does just that:

- a pool of idle connections per (scheme, host, port), most recently used first; a
  connection the server closes leaves the pool at once;
- a request sent on a reused connection that the server had closed before answering a
  single byte (its keep-alive ran out) is sent again on a new connection, which is what
  keep-alive clients do; any other failure is the caller's to retry;
- bodies by length, chunked or until close; streams handed over chunk by chunk with a read
  timeout between chunks; TLS with the system's CA store; no proxy from the environment,
  no redirects, no decompression (`accept-encoding: identity` is sent).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .._version import __version__
from ..retry_after import retry_after_ms_seconds, retry_after_seconds
from .config import GatewayConfig, Upstream

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_FORWARDED_ANTHROPIC = ("anthropic-beta",)
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS_PER_HOST = 2000
_STREAM_BUFFER = 1024 * 1024
"""Bytes of a stream held before reading from the upstream pauses (the client is slower)."""


class UpstreamConnectionError(ConnectionError):
    """The upstream closed the connection or sent something that is not HTTP."""


TIMEOUT_ERRORS = (asyncio.TimeoutError,)
CONNECTION_ERRORS = (OSError,)
"""Refused, reset, unreachable, TLS failures, and UpstreamConnectionError."""


@dataclass(frozen=True)
class _Target:
    key: tuple[str, str, int]
    path: bytes
    host_header: str
    tls: bool


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.served = 0
        self.received = False
        self.streaming = False
        self.complete = False
        self.keep_alive = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.buffered = 0
        self.read_paused = False
        self.until_close = False
        self.waiter: asyncio.Future[None] | None = None
        """Done when the head (streams) or the whole response (otherwise) is in."""
        self.timer: asyncio.TimerHandle | None = None
        """Fails the waiter with TimeoutError at the request's deadline."""
        self.wakeup: asyncio.Future[None] | None = None
        self.error: Exception | None = None

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.complete or self.waiter is None:
            return
        if self.status and self.until_close and exc is None:
            self.on_message_complete()  # a body without a length ends when the connection does
        else:
            self._fail(exc or UpstreamConnectionError("upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for on an idle connection: unusable
            if self.transport is not None:
                self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"invalid HTTP response from the upstream: {exc}"))
            if self.transport is not None:
                self.transport.close()

    # ------------------------------------------------------------------ parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.until_close = "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )
        if self.streaming:
            self._stop_timer()
            _wake(self.waiter)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > _STREAM_BUFFER and self.transport is not None and not self.read_paused:
                self.transport.pause_reading()
                self.read_paused = True
            _wake(self.wakeup)

    def on_message_complete(self) -> None:
        self.complete = True
        self._stop_timer()
        _wake(self.waiter)
        _wake(self.wakeup)

    # ------------------------------------------------------------------ use

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _time_out(self) -> None:
        self.timer = None
        self._fail(TimeoutError("the upstream did not answer in time"))
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        self._stop_timer()
        self.error = exc
        for future in (self.waiter, self.wakeup):
            if future is not None and not future.done():
                future.set_exception(exc)

    def send(self, request: bytes, streaming: bool, deadline: float) -> None:
        assert self.transport is not None
        loop = self.pool.loop
        self.streaming = streaming
        self.complete = False
        self.received = False
        self.status = 0
        self.headers = {}
        self.body = []
        self.buffered = 0
        self.error = None
        self.waiter = loop.create_future()
        self.timer = loop.call_at(deadline, self._time_out)
        self.transport.write(request)

    async def chunks(self, read_timeout: float) -> AsyncIterator[bytes]:
        loop = self.pool.loop
        while True:
            if self.body:
                pending, self.body, self.buffered = self.body, [], 0
                if self.read_paused and self.transport is not None:
                    self.transport.resume_reading()
                    self.read_paused = False
                yield b"".join(pending)
                continue
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self.wakeup = loop.create_future()
            async with asyncio.timeout(read_timeout):
                await self.wakeup
            self.wakeup = None


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Pool:
    """Connections to one (scheme, host, port): the idle ones, and a cap on those in use."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.key = key
        self.idle: deque[_Connection] = deque()
        self.in_use = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """A slot for one request; past MAX_CONNECTIONS_PER_HOST, wait for one to be released."""
        if self.in_use < MAX_CONNECTIONS_PER_HOST and not self.waiters:
            self.in_use += 1
            return
        slot = self.loop.create_future()
        self.waiters.append(slot)
        try:
            await slot  # release() hands its slot over
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()
            else:
                self.waiters.remove(slot)
            raise

    def release(self) -> None:
        while self.waiters:
            slot = self.waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.in_use -= 1

    def forget(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def take(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def give_back(self, conn: _Connection) -> None:
        conn.served += 1
        if conn.closed or not conn.keep_alive or not conn.complete:
            if conn.transport is not None:
                conn.transport.close()
        else:
            conn.waiter = conn.wakeup = None
            conn.body = []
            self.idle.append(conn)
        self.release()

    def discard(self, conn: _Connection) -> None:
        conn._stop_timer()
        if conn.transport is not None:
            conn.transport.abort()
        self.release()


@dataclass
class Reply:
    """An upstream answer: read already, except a successful stream."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None
    _conn: _Connection | None = None
    _pool: _Pool | None = None
    _read_timeout: float = 600.0

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._conn is not None
        async for chunk in self._conn.chunks(self._read_timeout):
            yield chunk

    def close(self, *, reuse: bool) -> None:
        """Release the connection to the pool after a complete stream; drop it after a cut one."""
        conn, pool, self._conn = self._conn, self._pool, None
        if conn is None or pool is None:
            return
        if reuse and conn.complete:
            pool.give_back(conn)
        else:
            pool.discard(conn)


class UpstreamClient:
    def __init__(self, config: GatewayConfig, tls: ssl.SSLContext | None = None) -> None:
        self._config = config
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._tls = tls
        """Certificate checks for https upstreams; by default the system's CA store."""

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            host = parts.hostname or ""
            port = parts.port or (443 if tls else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = (tls and port == 443) or (not tls and port == 80)
            host_header = host if default else f"{host}:{port}"
            if ":" in host and not default:
                host_header = f"[{host}]:{port}"
            target = _Target((parts.scheme, host, port), path.encode(), host_header, tls)
            self._targets[url] = target
        return target

    def _pool(self, target: _Target) -> _Pool:
        pool = self._pools.get(target.key)
        if pool is None:
            pool = self._pools[target.key] = _Pool(asyncio.get_running_loop(), target.key)
        return pool

    async def _connect(self, pool: _Pool, target: _Target, deadline: float) -> _Connection:
        tls: ssl.SSLContext | None = None
        if target.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        _, host, port = target.key
        async with asyncio.timeout_at(min(deadline, pool.loop.time() + CONNECT_TIMEOUT_S)):
            _, conn = await pool.loop.create_connection(
                lambda: _Connection(pool), host, port, ssl=tls, server_hostname=host if tls else None
            )
        return conn

    async def post(
        self, upstream: Upstream, url: str, content: bytes, headers: Mapping[str, str], *, stream: bool
    ) -> Reply:
        target = self._target(url)
        pool = self._pool(target)
        lines = [f"POST {target.path.decode()} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        lines.append(f"user-agent: unitcost-gateway/{__version__}\r\ncontent-length: {len(content)}\r\n\r\n")
        request = "".join(lines).encode() + content
        timeout = upstream.timeout_s
        await pool.acquire()
        try:
            conn = await self._exchange(pool, target, request, stream, pool.loop.time() + timeout)
        except BaseException:
            pool.release()
            raise
        if stream and conn.status < 400:
            return Reply(conn.status, conn.headers, None, conn, pool, timeout)
        if stream:  # an error answered to a stream request: read it whole
            try:
                async with asyncio.timeout(timeout):
                    body = b"".join([chunk async for chunk in conn.chunks(timeout)])
            except BaseException:
                pool.discard(conn)
                raise
        else:
            body = b"".join(conn.body)
        status, reply_headers = conn.status, conn.headers
        pool.give_back(conn)
        return Reply(status, reply_headers, body)

    async def _exchange(
        self, pool: _Pool, target: _Target, request: bytes, stream: bool, deadline: float
    ) -> _Connection:
        """Send and wait for the head (and, unless streaming, the whole body) until the deadline."""
        while True:
            conn = pool.take()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(pool, target, deadline)
            conn.send(request, stream, deadline)
            try:
                assert conn.waiter is not None
                await conn.waiter
                return conn
            except TimeoutError:
                raise
            except OSError:
                if conn.transport is not None:
                    conn.transport.abort()
                if reused and not conn.received:
                    continue  # closed by the server while idle: the request never reached it
                raise
            except BaseException:
                conn._stop_timer()
                if conn.transport is not None:
                    conn.transport.abort()
                raise

    async def aclose(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                conn = pool.idle.pop()
                if conn.transport is not None:
                    conn.transport.close()


def upstream_url(upstream: Upstream, endpoint: str) -> str:
    """OpenAI-kind base URLs include /v1 (as in the OpenAI SDK); Anthropic ones do not."""
    if upstream.kind == "anthropic":
        return f"{upstream.base_url}/v1{endpoint}"
    return f"{upstream.base_url}{endpoint}"


def upstream_headers(upstream: Upstream, client_headers: Mapping[str, str]) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    key = upstream.api_key()
    if upstream.kind == "anthropic":
        headers["anthropic-version"] = client_headers.get("anthropic-version") or upstream.anthropic_version
        for name in _FORWARDED_ANTHROPIC:
            if name in client_headers:
                headers[name] = client_headers[name]
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a failed attempt is worth another, decided as the official SDKs decide: the
    upstream's own `x-should-retry: true|false` when it sends one, otherwise the status."""
    said = headers.get("x-should-retry")
    if said == "true":
        return True
    if said == "false":
        return False
    return status in RETRY_STATUSES


def backoff_delay(
    attempt: int, base_s: float, max_s: float, retry_after: str | None, retry_after_ms: str | None = None
) -> float:
    """Exponential backoff with full jitter; the server's wait is honoured up to max_s:
    `retry-after-ms` first (as the SDKs read it), then `retry-after` (seconds or an HTTP-date)."""
    asked = retry_after_ms_seconds(retry_after_ms)
    if asked is None:
        asked = retry_after_seconds(retry_after)
    if asked is not None:
        return min(asked, max_s)
    return random.uniform(0, min(max_s, base_s * 2 ** (attempt - 1)))


async def sleep_backoff(
    attempt: int, base_s: float, max_s: float, retry_after: str | None, retry_after_ms: str | None = None
) -> None:
    await asyncio.sleep(backoff_delay(attempt, base_s, max_s, retry_after, retry_after_ms))
