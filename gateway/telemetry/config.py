"""Telemetry settings, from the standard OpenTelemetry environment variables.

Only the few variables the gateway acts on itself are read here; the OTLP exporters read the
rest of the ``OTEL_EXPORTER_OTLP_*`` family (headers, timeouts, certificates, compression) and
the SDK reads ``OTEL_TRACES_SAMPLER`` and ``OTEL_RESOURCE_ATTRIBUTES``, as usual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SERVICE_NAME = "llm-gateway"


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
