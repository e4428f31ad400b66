"""The pooled upstream client: only configured upstreams, keys from the environment only."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import httpx

from .config import GatewayConfig, Upstream

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_FORWARDED_ANTHROPIC = ("anthropic-beta",)


def make_client(config: GatewayConfig) -> httpx.AsyncClient:
    timeout = max((u.timeout_s for u in config.upstreams.values()), default=600.0)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=500, keepalive_expiry=60),
        follow_redirects=False,
        trust_env=False,
    )


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
