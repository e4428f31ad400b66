"""Exact-match response cache: the same normalised request gets the stored response.

The key is the SHA-256 of the endpoint, the request body with keys sorted and the fields that
do not change the answer removed (stream flags, user and metadata), and a context: the
upstream and model that answer, the headers that change the answer (`anthropic-version`,
`anthropic-beta`) and the tenant the entry belongs to (by default the virtual key, so that one
tenant never gets another's answer). Only complete, successful, non-streamed responses are
stored (`unfinished` says which answers are not complete). A hit is recorded with cost 0 and
the cost it avoided.

A cache is an optimisation: when its Redis cannot be reached, requests go to the upstream
uncached (the outage is logged once, and its end), and caching resumes when Redis is back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import orjson

log = logging.getLogger("unitcost.gateway.cache")

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata"})
OPT_OUT_HEADER = "x-unitcost-cache"
"""`x-unitcost-cache: no` (or `off`, `bypass`) skips the cache for one request."""
CacheScope = Literal["key", "team", "global"]
CACHE_SCOPES: tuple[CacheScope, ...] = ("key", "team", "global")


def cache_key(
    endpoint: str, body: Mapping[str, Any], upstream_model: str, context: Mapping[str, str] | None = None
) -> str:
    """`context`: what else changes or partitions the answer (upstream, headers, tenant)."""
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    kept["model"] = upstream_model
    digest = hashlib.sha256(endpoint.encode() + b"\0" + orjson.dumps(kept, option=orjson.OPT_SORT_KEYS))
    if context:
        digest.update(b"\0" + orjson.dumps(dict(context), option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


# Which 2xx answers are not whole, and so never stored. A cut-short answer goes once to the
# client that asked, which sees why in it; stored, it would be served for the whole TTL as if
# the model had finished, where asking again (with more room, or once a filter's cause is gone)
# could give the whole answer. An allow-list: a reason this code does not know is not whole.
# - Chat Completions: every choice must end in "stop", "tool_calls" or the legacy
#   "function_call"; not "length" (max_tokens reached), "content_filter" (content left out),
#   nor any other value an OpenAI-compatible server sends (OpenRouter's "error"), nor none.
#   A `message.refusal` ending in "stop" is the model's whole answer and is stored.
# - Responses API: `status` "completed" only; not "incomplete" (`incomplete_details.reason`
#   max_output_tokens or content_filter), "failed", "cancelled", nor "queued"/"in_progress"
#   (a background response, whose answer is not there yet).
# - Anthropic Messages: `stop_reason` "end_turn", "stop_sequence" or "tool_use"; not
#   "max_tokens", "model_context_window_exceeded", "refusal" (the safety classifiers stopped
#   the answer), nor "pause_turn" (a server-tool turn the client is to continue).
# - Embeddings have no end reason: a 2xx answer with its usage is whole.
# Streams are neither stored nor served, so a stream cut before its final event never is.
_WHOLE_CHAT = frozenset({"stop", "tool_calls", "function_call"})
_WHOLE_MESSAGE = frozenset({"end_turn", "stop_sequence", "tool_use"})


def unfinished(api: str, operation: str, answer: Mapping[str, Any]) -> str | None:
    """Why a 2xx answer (its JSON body) is not whole, e.g. "finish_reason length"; None if it is."""
    if api == "anthropic":
        reason = answer.get("stop_reason")
        return None if reason in _WHOLE_MESSAGE else f"stop_reason {reason}"
    if operation == "responses":
        status = answer.get("status")
        if status == "completed":
            return None
        details = answer.get("incomplete_details")
        why = details.get("reason") if isinstance(details, Mapping) else None
        return f"status {status}" + (f" ({why})" if why else "")
    if operation == "chat":
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:
            return "no choices"
        for choice in choices:
            reason = choice.get("finish_reason") if isinstance(choice, Mapping) else None
            if reason not in _WHOLE_CHAT:
                return f"finish_reason {reason}"
    return None


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """LRU with a TTL, bounded by entries and by bytes: answers can be large (a batch of
    embeddings is megabytes), so a count alone would not bound the gateway's memory."""

    DEFAULT_MAX_BYTES = 256 * 1024 * 1024

    def __init__(self, ttl_s: int, max_entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[1]

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self._max_bytes // 8:
            return  # one answer may not push out most of the others
        self._drop(key)
        self._items[key] = (time.monotonic() + self._ttl, value)
        self._bytes += len(value)
        while len(self._items) > self._max or self._bytes > self._max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])

    async def close(self) -> None:
        self._items.clear()
        self._bytes = 0


class CacheOutage:
    """Tracks an unreachable cache store: logs its start once and its end once, and while it
    lasts lets one call try the store every `retry_s` rather than every request pay a timeout."""

    def __init__(self, where: str, retry_s: float) -> None:
        self.where = where
        self.retry_s = retry_s
        self.since: float | None = None
        self.retry_at = 0.0
        self.skipped = 0
        """Lookups that did not reach the store during the outage."""

    def skipping(self) -> bool:
        """True while the store is known to be down and it is not yet time to try it again."""
        return self.since is not None and time.monotonic() < self.retry_at

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.retry_at = now + self.retry_s
        if self.since is None:
            self.since = now
            # The exception's type only: its text may quote the server's address or reply.
            log.warning(
                "response cache unreachable (Redis %s): %s; requests go to the upstream uncached "
                "until it is back",
                self.where,
                type(exc).__name__,
            )

    def recovered(self) -> None:
        if self.since is not None:
            log.warning(
                "response cache reachable again (Redis %s) after %.1f s; caching resumed "
                "(%d requests answered uncached meanwhile)",
                self.where,
                time.monotonic() - self.since,
                self.skipped,
            )
            self.since, self.skipped = None, 0


class RedisCache:
    """Entries under `<prefix>cache:` with Redis's own expiry. Never raises on a Redis failure:
    a lookup misses and a store is dropped (see CacheOutage)."""

    TIMEOUT_S = 1.0
    """The longest a Redis call may take; shorter when [gateway.redis] timeout_s is."""

    def __init__(
        self, url: str, prefix: str, ttl_s: int, *, timeout_s: float = TIMEOUT_S, retry_s: float = 1.0
    ) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        from .budgets import masked_url

        # No retries inside redis-py (its default backs off for seconds): a miss is cheaper.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._prefix = prefix + "cache:"
        self._ttl = ttl_s
        self.outage = CacheOutage(masked_url(url), retry_s)

    async def get(self, key: str) -> bytes | None:
        if self.outage.skipping():
            self.outage.skipped += 1
            return None
        try:
            value = await self._redis.get(self._prefix + key)
        except self._errors as exc:
            self.outage.failed(exc)
            self.outage.skipped += 1
            return None
        self.outage.recovered()
        return value.encode() if isinstance(value, str) else value

    async def put(self, key: str, value: bytes) -> None:
        if self.outage.skipping():
            return
        try:
            await self._redis.set(self._prefix + key, value, ex=self._ttl)
        except self._errors as exc:
            self.outage.failed(exc)
            return
        self.outage.recovered()

    async def close(self) -> None:
        with contextlib.suppress(*self._errors):
            await self._redis.aclose()
