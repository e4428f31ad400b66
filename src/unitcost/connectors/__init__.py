"""Connectors: usage from provider responses, the official SDKs, OpenTelemetry and other tools' exports."""

from .instrument import instrument, uninstrument
from .recorder import Recorder, configure, flush, record
from .responses import UnrecognisedResponseError, normalise_response
from .tagging import tags

__all__ = [
    "Recorder",
    "UnrecognisedResponseError",
    "configure",
    "flush",
    "instrument",
    "normalise_response",
    "record",
    "tags",
    "uninstrument",
]
