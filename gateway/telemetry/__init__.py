"""Telemetry: OpenTelemetry traces, Prometheus (and OTLP) metrics, and JSON request logs.

The app factory builds one `Telemetry` from `TelemetryConfig.from_env` and puts it in
``app.state.telemetry``; `metrics` (the ``GET /metrics`` handler) reads it from there. Per
request: `Telemetry.start_request` gives a `RequestTrace` whose ``activate()`` block covers the
handler, whose ``stage(...)`` blocks cover the pipeline stages, and which
`Telemetry.request_done` ends with the ledger record (span, metrics and log line together).
The call stage uses the module functions `attempt`, `fallback` and `upstream_headers`, which
act on the current request's trace. Tracing is off unless an OTLP endpoint is configured.
"""

from gateway.telemetry.config import TelemetryConfig
from gateway.telemetry.core import Telemetry
from gateway.telemetry.http import metrics
from gateway.telemetry.logs import (
    REQUEST_LOGGER,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_request,
)
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import (
    STAGE_SPANS,
    RecordingTrace,
    RequestTrace,
    Stage,
    attempt,
    current,
    fallback,
    upstream_headers,
)

__all__ = [
    "REQUEST_LOGGER",
    "STAGE_SPANS",
    "JsonFormatter",
    "Metrics",
    "RecordingTrace",
    "RequestTrace",
    "Stage",
    "Telemetry",
    "TelemetryConfig",
    "TextFormatter",
    "attempt",
    "configure_logging",
    "current",
    "fallback",
    "log_request",
    "metrics",
    "upstream_headers",
]
