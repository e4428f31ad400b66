"""The pooled upstream client: only configured upstreams, keys from the environment only.

aiohttp rather than httpx: under hundreds of concurrent requests httpx's connection pool
spent more CPU choosing a connection than the rest of the gateway spent on the request.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from .config import GatewayConfig, Upstream

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_FORWARDED_ANTHROPIC = ("anthropic-beta",)


TIMEOUT_ERRORS = (asyncio.TimeoutError,)
"""aiohttp's connect and read timeouts are subclasses of asyncio.TimeoutError."""
CONNECTION_ERRORS = (aiohttp.ClientError,)


@dataclass
class Reply:
    """An upstream answer: read already, except a successful stream."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None
    raw: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.raw.content.iter_any():
            yield chunk

    def close(self, *, reuse: bool) -> None:
        """Release the connection to the pool after a complete stream; drop it after a cut one."""
        if reuse:
            self.raw.release()
        else:
            self.raw.close()


class UpstreamClient:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=2000, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
        return self._session

    async def post(
        self, upstream: Upstream, url: str, content: bytes, headers: Mapping[str, str], *, stream: bool
    ) -> Reply:
        session = self._session or self._open()
        if stream:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=upstream.timeout_s)
        else:
            timeout = aiohttp.ClientTimeout(total=upstream.timeout_s, sock_connect=10)
        raw = await session.post(
            url, data=content, headers=dict(headers), timeout=timeout, allow_redirects=False
        )
        if stream and raw.status < 400:
            return Reply(raw.status, raw.headers, None, raw)
        try:
            body = await raw.read()
        finally:
            raw.release()
        return Reply(raw.status, raw.headers, body, raw)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: str | None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After (seconds) is honoured up to max_s."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), max_s)
        except ValueError:
            pass
    return random.uniform(0, min(max_s, base_s * 2 ** (attempt - 1)))


async def sleep_backoff(attempt: int, base_s: float, max_s: float, retry_after: str | None) -> None:
    await asyncio.sleep(backoff_delay(attempt, base_s, max_s, retry_after))
