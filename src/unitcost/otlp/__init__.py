"""OpenTelemetry: an OTLP/HTTP receiver that turns GenAI spans into priced events."""
