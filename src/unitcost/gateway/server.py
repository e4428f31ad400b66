"""Assemble and run the gateway: spool replay, budget state, cache, ledger writer, HTTP server."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from ..api import Ledger
from ..config import Config, resolve_ledger
from ..pricing.book import PriceBook
from .app import Gateway
from .budgets import BudgetState, MemoryBudgetState, RedisBudgetState
from .cache import MemoryCache, RedisCache, ResponseCache
from .config import GatewayConfig
from .httpserver import serve
from .metrics import GatewayMetrics, metrics_token
from .restore import restore_budgets
from .spool import Spool, drain
from .writer import LedgerWriter, ledger_sink

log = logging.getLogger("unitcost.gateway")


def recover(config: GatewayConfig, ledger: Ledger) -> tuple[PriceBook, BudgetState]:
    """Replay what a previous run left in the spool, then rebuild in-process budget counters."""
    replayed = drain(config.spool_dir, ledger_sink(ledger))
    if replayed:
        log.info("spool: %d events of a previous run replayed into the ledger", replayed)
    if config.redis_url:
        state = RedisBudgetState(
            config.redis_url,
            config.redis_prefix,
            lease_s=config.redis_lease_s,
            fail_open=config.redis_fail_open,
            timeout_s=config.redis_timeout_s,
        )
        return ledger.book, state
    budgets = MemoryBudgetState()
    if config.budgets:
        restore_budgets(ledger.store, config.budgets, budgets, config.redis_prefix)
    return ledger.book, budgets


def build_gateway(
    config: GatewayConfig, book: PriceBook, budgets: BudgetState, writer: LedgerWriter | None = None
) -> Gateway:
    spool = Spool(config.spool_dir, fsync_interval_ms=config.fsync_interval_ms)
    cache: ResponseCache | None = None
    if config.cache_enabled:
        if config.cache_backend == "redis" and config.redis_url:
            # The cache gives up sooner than the budget state (a miss is cheap), and never
            # later than [gateway.redis] timeout_s: a hung Redis holds no request past it.
            timeout_s = min(config.redis_timeout_s, RedisCache.TIMEOUT_S)
            cache = RedisCache(config.redis_url, config.redis_prefix, config.cache_ttl_s, timeout_s=timeout_s)
        else:
            cache = MemoryCache(config.cache_ttl_s, config.cache_max_entries)
    gateway = Gateway(config, book, spool, budgets, cache)
    if writer is not None and isinstance(gateway.metrics, GatewayMetrics):
        gateway.metrics.writer = writer
    gateway.warm()
    return gateway


def run_gateway(
    config: GatewayConfig,
    base: Config,
    ledger_target: str | None,
    sock: socket.socket,
    on_ready: Callable[[], Any] | None = None,
) -> None:
    """Serve on `sock` (bound already) until SIGTERM or SIGINT; `on_ready` once it listens, after
    the ledger, the spool and the watch settings were found usable."""
    metrics_token(config)  # a /metrics token that is named but not set stops it before anything starts
    target = resolve_ledger(ledger_target, base)
    with Ledger(target, config=base) as ledger:
        book, budgets = recover(config, ledger)
    # The ledger is closed here: from now on the writer process is its only writer.
    writer = LedgerWriter(config.spool_dir, target, base.path, watch=config.watch)
    writer.start()
    gateway = build_gateway(config, book, budgets, writer)
    host, port = sock.getsockname()[:2]
    try:
        serve(
            gateway.handle,
            host,
            port,
            max_body_bytes=config.max_body_bytes,
            on_shutdown=gateway.aclose,
            on_ready=on_ready,
            sock=sock,
        )
    finally:
        gateway.spool.close()
        writer.stop()
