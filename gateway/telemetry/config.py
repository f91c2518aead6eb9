"""Telemetry settings, from the standard OpenTelemetry environment variables.

The gateway's span exporter (`otlp_traces`) takes its settings from here too: the
``OTEL_EXPORTER_OTLP_[TRACES_]*`` headers, compression, timeout and certificates, and the
``OTEL_BSP_*`` queue and batch sizes. Spans always go as OTLP/HTTP JSON, which every
OpenTelemetry Collector accepts: ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` is not read. The
OTLP metric exporter reads its own variables, and the SDK reads ``OTEL_TRACES_SAMPLER`` and
``OTEL_RESOURCE_ATTRIBUTES``, as usual.

This module imports nothing heavy: the settings (and so every CLI command) import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

DEFAULT_SERVICE_NAME = "llm-gateway"


@dataclass(frozen=True, slots=True)
class SpanExportSettings:
    """How spans are batched and sent; `TelemetryConfig.from_env` reads them from the standard
    ``OTEL_BSP_*`` and ``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables."""

    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra request headers (``OTEL_EXPORTER_OTLP_TRACES_HEADERS``, else ``..._HEADERS``)."""
    compression: str | None = None
    """``gzip`` or ``deflate`` to compress each body; anything else sends it as is."""
    timeout_s: float = 10.0
    """Per POST (``OTEL_EXPORTER_OTLP_TIMEOUT``, in seconds as the Python SDK reads it)."""
    certificate: str | None = None
    """A CA bundle to verify the collector with (``OTEL_EXPORTER_OTLP_CERTIFICATE``)."""
    client_certificate: str | None = None
    """mTLS: our certificate and key (``..._CLIENT_CERTIFICATE``, ``..._CLIENT_KEY``)."""
    client_key: str | None = None
    max_queue: int = 2048
    """Spans waiting at most (``OTEL_BSP_MAX_QUEUE_SIZE``); more are dropped and counted."""
    batch_size: int = 512
    """Spans per POST at most (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``)."""
    delay_s: float = 5.0
    """Longest a span waits for its batch (``OTEL_BSP_SCHEDULE_DELAY``, given in ms)."""
    max_attempts: int = 5
    """POSTs per batch at most, the first included, on retryable failures."""
    backoff_s: float = 1.0
    """First retry's wait; it doubles each time (with up to as much jitter)."""
    max_backoff_s: float = 30.0


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    otlp_endpoint: str | None = None
    """OTLP/HTTP root, e.g. ``http://otel-collector:4318`` (`OTEL_EXPORTER_OTLP_ENDPOINT`);
    ``/v1/traces`` and ``/v1/metrics`` are appended. Unset: no export, and tracing is off."""
    traces_endpoint: str | None = None
    """Full URL for spans only (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), overriding the root."""
    metrics_endpoint: str | None = None
    """Full URL for metrics only (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), overriding the root."""
    service_name: str = DEFAULT_SERVICE_NAME
    """The ``service.name`` resource attribute (`OTEL_SERVICE_NAME`)."""
    traces: bool = True
    """Export spans when an endpoint is set (`OTEL_TRACES_EXPORTER=none` turns them off)."""
    metrics: bool = True
    """Export metrics over OTLP when an endpoint is set (`OTEL_METRICS_EXPORTER=none`: off;
    the Prometheus ``/metrics`` endpoint is always served)."""
    metric_interval_s: float = 15.0
    """Seconds between OTLP metric exports (`OTEL_METRIC_EXPORT_INTERVAL`, in milliseconds)."""
    span_export: SpanExportSettings = field(default_factory=SpanExportSettings)
    """How spans are queued and sent to `traces_url`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetryConfig:
        env = os.environ if environ is None else environ
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        interval_ms = env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
        return cls(
            otlp_endpoint=None if disabled else (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None),
            traces_endpoint=env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None,
            metrics_endpoint=env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or None,
            service_name=env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
            traces=not disabled and _exporter_on(env.get("OTEL_TRACES_EXPORTER")),
            metrics=not disabled and _exporter_on(env.get("OTEL_METRICS_EXPORTER")),
            metric_interval_s=int(interval_ms) / 1000 if interval_ms.isdigit() else 15.0,
            span_export=_span_export(env),
        )

    @property
    def traces_url(self) -> str | None:
        """Where spans go, or None when tracing is off."""
        if not self.traces:
            return None
        return self.traces_endpoint or _signal_url(self.otlp_endpoint, "traces")

    @property
    def metrics_url(self) -> str | None:
        """Where OTLP metrics go, or None when only Prometheus is served."""
        if not self.metrics:
            return None
        return self.metrics_endpoint or _signal_url(self.otlp_endpoint, "metrics")


def _exporter_on(value: str | None) -> bool:
    return (value or "otlp").strip().lower() != "none"


def _signal_url(root: str | None, signal: str) -> str | None:
    return f"{root.rstrip('/')}/v1/{signal}" if root else None


def _span_export(env: Mapping[str, str]) -> SpanExportSettings:
    def otlp(name: str) -> str | None:
        value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
        value = value or env.get(f"OTEL_EXPORTER_OTLP_{name}")
        return value.strip() if value and value.strip() else None

    def number(name: str, default: float) -> float:
        try:
            value = float(env.get(name) or default)
        except ValueError:
            return default
        return value if value > 0 else default

    defaults = SpanExportSettings()
    compression = (otlp("COMPRESSION") or "").lower()
    return SpanExportSettings(
        headers=_headers(otlp("HEADERS") or ""),
        compression=compression if compression in ("gzip", "deflate") else None,
        timeout_s=number("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 0)
        or number("OTEL_EXPORTER_OTLP_TIMEOUT", defaults.timeout_s),
        certificate=otlp("CERTIFICATE"),
        client_certificate=otlp("CLIENT_CERTIFICATE"),
        client_key=otlp("CLIENT_KEY"),
        max_queue=int(number("OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue)),
        batch_size=int(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaults.batch_size)),
        delay_s=number("OTEL_BSP_SCHEDULE_DELAY", defaults.delay_s * 1000) / 1000,
    )


def _headers(value: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with URL-encoded values (the OTLP exporter variables' format); names
    lower-cased, pairs without ``=`` skipped."""
    headers = {}
    for pair in value.split(","):
        name, equals, text = pair.partition("=")
        if equals and name.strip():
            headers[unquote(name.strip()).lower()] = unquote(text.strip())
    return headers
