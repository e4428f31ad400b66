"""Assemble and run the gateway: ledger writer, spool, budget state, cache, HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..api import Ledger
from ..config import Config
from .app import Gateway
from .budgets import BudgetState, MemoryBudgetState, RedisBudgetState
from .cache import MemoryCache, RedisCache, ResponseCache
from .config import GatewayConfig
from .restore import restore_budgets
from .spool import Spool

log = logging.getLogger("unitcost.gateway")


def ledger_sink(ledger: Ledger) -> Any:
    def sink(batch: Sequence[Mapping[str, Any]]) -> None:
        summary = ledger.ingest_records(batch, source="gateway")
        for rejection in summary.rejections[:10]:
            log.error("gateway event rejected by the ledger: %s", rejection)

    return sink


def build_gateway(config: GatewayConfig, ledger: Ledger) -> Gateway:
    spool = Spool(config.spool_dir, ledger_sink(ledger), fsync_interval_ms=config.fsync_interval_ms)
    budgets: BudgetState
    if config.redis_url:
        budgets = RedisBudgetState(config.redis_url)
    else:
        budgets = MemoryBudgetState()
        if config.budgets:
            # The spool was replayed above, so the ledger holds every event of earlier runs.
            restore_budgets(ledger.store, config.budgets, budgets, config.redis_prefix)
    cache: ResponseCache | None = None
    if config.cache_enabled:
        if config.cache_backend == "redis" and config.redis_url:
            cache = RedisCache(config.redis_url, config.redis_prefix, config.cache_ttl_s)
        else:
            cache = MemoryCache(config.cache_ttl_s, config.cache_max_entries)
    gateway = Gateway(config, ledger.book, spool, budgets, cache)
    gateway.warm()
    return gateway


def serve(app: Any, host: str, port: int) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=75,
            backlog=4096,
        )
    )
    server.run()


def run_gateway(config: GatewayConfig, base: Config, ledger_target: str | None, host: str, port: int) -> None:
    ledger = Ledger(ledger_target, config=base)
    try:
        gateway = build_gateway(config, ledger)
        try:
            serve(gateway.app, host, port)
        finally:
            gateway.spool.close()
    finally:
        ledger.close()
