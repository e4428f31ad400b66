"""The anomaly detectors, each in its own module; `ALL` is the default set, in reporting order."""

from __future__ import annotations

from .base import Context, Detector, Finding
from .billed_drift import BilledDrift
from .cost_hour import CostPerHour
from .cost_per_request import CostPerRequest
from .runaway import RunawayTrace
from .tokens_shift import TokensPerRequest
from .unpriced import NewUnpricedModel
from .waste import RetryWaste


def all_detectors() -> list[Detector]:
    return [
        CostPerHour(),
        TokensPerRequest(),
        CostPerRequest(),
        RetryWaste(),
        RunawayTrace(),
        NewUnpricedModel(),
        BilledDrift(),
    ]


__all__ = ["Context", "Detector", "Finding", "all_detectors"]
