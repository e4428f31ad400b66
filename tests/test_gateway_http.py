"""The gateway's own HTTP server and upstream client, against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from unitcost.gateway.config import GatewayConfig, Upstream
from unitcost.gateway.httpserver import HttpServer, Request, Response
from unitcost.gateway.upstream import CONNECTION_ERRORS, TIMEOUT_ERRORS, UpstreamClient

# ------------------------------------------------------------------ the server


async def echo(request: Request) -> Response:
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part {i};".encode()

        return Response(stream=chunks(), content_type="text/plain")
    body = b"too large" if request.too_large else request.method.encode() + b" " + request.body
    return Response(body, 413 if request.too_large else 200, {"x-path": request.path})


async def serving(handler: Callable[[Request], Awaitable[Response]], run: Any) -> Any:
    server = HttpServer(handler, max_body_bytes=1000)
    await server.start("127.0.0.1", 0)
    try:
        return await run(server.port)
    finally:
        await server.stop()


async def exchange(port: int, raw: bytes, *, until: bytes | None = None) -> bytes:
    """Send raw bytes; read until the server closes (or until `until` has been seen)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    seen = b""
    try:
        while until is None or seen.count(until) == 0:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            seen += chunk
    finally:
        writer.close()
    return seen


def test_keep_alive_pipelining_and_chunked_request_bodies() -> None:
    raw = (
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    out = asyncio.run(serving(echo, lambda port: exchange(port, raw)))
    responses = out.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 4  # answered in order on one connection, closed after the last
    assert responses[0].startswith(b"200 OK") and responses[0].endswith(b"POST hello")
    assert b"x-path: /b" in responses[1] and responses[1].endswith(b"POST abcde")
    assert b"content-length: 5\r\n" in responses[2] and responses[2].endswith(b"\r\n\r\n")  # HEAD: no body
    assert b"connection: close" in responses[3] and responses[3].endswith(b"GET ")


def test_oversized_bodies_reach_the_handler_as_too_large() -> None:
    declared = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000
    chunked = b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked += b"".join(b"200\r\n" + b"y" * 512 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    expect = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n"

    async def run(port: int) -> list[bytes]:
        return [
            await exchange(port, declared + b"GET /ok HTTP/1.1\r\nconnection: close\r\n\r\n"),
            await exchange(port, chunked, until=b"too large"),
            await exchange(port, expect),
        ]

    first, second, third = asyncio.run(serving(echo, run))
    # The dropped body did not break the connection: the next request was answered.
    assert first.startswith(b"HTTP/1.1 413") and first.endswith(b"GET ")
    assert second.startswith(b"HTTP/1.1 413")
    # A client waiting for 100-continue is answered at once, without the body being sent.
    assert (
        third.startswith(b"HTTP/1.1 413") and b"connection: close" in third and b"100 Continue" not in third
    )


def test_expect_continue_gets_its_interim_response() -> None:
    raw = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\nconnection: close\r\n\r\nok"
    out = asyncio.run(serving(echo, lambda port: exchange(port, raw)))
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and out.endswith(b"POST ok")


def test_streamed_responses_are_chunked_and_bad_requests_get_a_400() -> None:
    async def run(port: int) -> tuple[bytes, bytes]:
        streamed = await exchange(port, b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        bad = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        return streamed, bad

    streamed, bad = asyncio.run(serving(echo, run))
    assert b"transfer-encoding: chunked" in streamed
    assert streamed.endswith(b"\r\n\r\n7\r\npart 0;\r\n7\r\npart 1;\r\n7\r\npart 2;\r\n0\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")


def test_a_stream_whose_client_leaves_is_closed_and_its_cleanup_runs() -> None:
    closed = asyncio.Event()

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick"
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        return Response(stream=chunks())

    async def run(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"tick")
        writer.close()
        await asyncio.wait_for(closed.wait(), 10)
        return closed.is_set()

    assert asyncio.run(serving(endless, run))


def test_shutdown_lets_the_request_in_flight_finish() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.2)
        return Response(b"done")

    async def main() -> bytes:
        server = HttpServer(slow)
        await server.start("127.0.0.1", 0)
        pending = asyncio.ensure_future(exchange(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
        await asyncio.sleep(0.05)
        await server.stop()
        return await pending

    out = asyncio.run(main())
    assert out.startswith(b"HTTP/1.1 200") and b"connection: close" in out and out.endswith(b"done")


# ------------------------------------------------------------------ the upstream client


def upstream(port: int, timeout_s: float = 10.0) -> Upstream:
    return Upstream("u", "openai", f"http://127.0.0.1:{port}/v1", None, "openai", timeout_s=timeout_s)


def client() -> UpstreamClient:
    return UpstreamClient(GatewayConfig(upstreams={}, models={}))


class RawServer:
    """A hand-written HTTP peer: `answer(request number, connection number)` -> bytes or None."""

    def __init__(self, answer: Callable[[int, int], bytes | None]) -> None:
        self.answer = answer
        self.requests = 0
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                reply = self.answer(self.requests, number)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-request-id: r1\r\n\r\n%s" % (len(body), body)


def test_client_reuses_connections_and_reads_every_body_framing() -> None:
    replies = [
        ok(b'{"a": 1}'),
        b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{"b"\r\n4\r\n: 2}\r\n0\r\n\r\n',
        b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\nretry-after: 1\r\n\r\n{}",
        b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"until": "close"}',
    ]
    peer = RawServer(lambda n, _: replies[n - 1])

    async def main() -> list[Any]:
        port = await peer.start()
        http = client()
        got = []
        for _ in replies:
            reply = await http.post(upstream(port), f"http://127.0.0.1:{port}/v1/x", b"{}", {}, stream=False)
            got.append((reply.status, reply.body, dict(reply.headers)))
        await http.aclose()
        await peer.stop()
        return got

    got = asyncio.run(main())
    assert [(status, body) for status, body, _ in got] == [
        (200, b'{"a": 1}'),
        (200, b'{"b": 2}'),
        (503, b"{}"),
        (200, b'{"until": "close"}'),
    ]
    assert got[0][2]["x-request-id"] == "r1" and got[2][2]["retry-after"] == "1"
    assert peer.connections == 1  # one keep-alive connection carried all four


def test_a_request_on_a_connection_the_server_dropped_is_sent_again() -> None:
    # The server answers the first request, then drops the connection when the second arrives
    # without answering (a keep-alive timeout racing the request): the client resends it once
    # on a new connection, which the caller never notices.
    peer = RawServer(lambda n, conn: None if (n, conn) == (2, 1) else ok(b"%d" % n))

    async def main() -> list[bytes | None]:
        port = await peer.start()
        http = client()
        url = f"http://127.0.0.1:{port}/v1/x"
        bodies = [(await http.post(upstream(port), url, b"{}", {}, stream=False)).body for _ in range(2)]
        await peer.stop()
        return bodies

    assert asyncio.run(main()) == [b"1", b"3"]
    assert peer.connections == 2


def test_client_streams_and_fails_with_the_errors_the_gateway_retries_on() -> None:
    def answer(n: int, _: int) -> bytes | None:
        if n == 1:
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
        return b""  # the second request is never answered

    peer = RawServer(answer)

    async def main() -> tuple[list[bytes], Any, Any]:
        port = await peer.start()
        http = client()
        url = f"http://127.0.0.1:{port}/v1/x"
        reply = await http.post(upstream(port), url, b"{}", {}, stream=True)
        chunks = [chunk async for chunk in reply.chunks()]
        reply.close(reuse=True)
        with pytest.raises(TIMEOUT_ERRORS) as late:
            await http.post(upstream(port, timeout_s=0.2), url, b"{}", {}, stream=False)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        with pytest.raises(CONNECTION_ERRORS) as refused:
            await http.post(
                upstream(closed_port), f"http://127.0.0.1:{closed_port}/v1/x", b"{}", {}, stream=False
            )
        await peer.stop()
        return chunks, late.value, refused.value

    chunks, late, refused = asyncio.run(main())
    assert b"".join(chunks) == b"onetwo"
    assert isinstance(late, TimeoutError) and not isinstance(refused, TimeoutError)


def test_requests_past_the_connection_cap_wait_for_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import unitcost.gateway.upstream as upstream_module

    monkeypatch.setattr(upstream_module, "MAX_CONNECTIONS_PER_HOST", 1)
    peer = RawServer(lambda n, _: ok(b"%d" % n))

    async def main() -> list[bytes | None]:
        port = await peer.start()
        http = client()
        url = f"http://127.0.0.1:{port}/v1/x"
        replies = await asyncio.gather(
            *(http.post(upstream(port), url, b"{}", {}, stream=False) for _ in range(3))
        )
        await peer.stop()
        return [reply.body for reply in replies]

    assert sorted(asyncio.run(main())) == [b"1", b"2", b"3"]
    assert peer.connections == 1  # the second and third waited for the first's connection


def test_https_upstreams_are_verified_and_pooled(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
    ]
    make += ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(make, check=True, capture_output=True)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def main() -> tuple[list[bytes | None], int, Any]:
        server = await asyncio.start_server(
            RawServer(lambda n, _: ok(b"%d" % n))._serve, "127.0.0.1", 0, ssl=served
        )
        port = server.sockets[0].getsockname()[1]
        url = f"https://localhost:{port}/v1/x"
        trusting = UpstreamClient(
            GatewayConfig(upstreams={}, models={}), tls=ssl.create_default_context(cafile=cert)
        )
        bodies = [(await trusting.post(upstream(port), url, b"{}", {}, stream=False)).body for _ in range(2)]
        pooled = sum(len(pool.idle) for pool in trusting._pools.values())
        with pytest.raises(
            CONNECTION_ERRORS
        ) as refused:  # the system CA store does not know this certificate
            await client().post(upstream(port), url, b"{}", {}, stream=False)
        server.close()
        return bodies, pooled, refused.value

    bodies, pooled, refused = asyncio.run(main())
    assert bodies == [b"1", b"2"] and pooled == 1
    assert isinstance(refused, ssl.SSLCertVerificationError)
