"""The Prometheus text exposition both servers answer `/metrics` with (`unitcost serve`, the gateway).

Version 0.0.4 of the text format: the one every Prometheus and every compatible scraper
reads without negotiation. The `_created` series prometheus_client adds beside every counter
and histogram are left out: they double the series count and the text format has no use
for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _WithoutCreated:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics as the text the servers answer with."""
    return generate_latest(_WithoutCreated(registry))
