"""The Prometheus registry's metrics, pushed over OTLP/HTTP every few seconds.

Why a bridge rather than OpenTelemetry instruments beside the Prometheus ones: recording each
observation twice puts the SDK's instruments (a frozenset of the attributes per call, a lock
per aggregation, exemplars) on every request: 77-93 µs of CPU per request side by side in
bench/telemetry/RESULTS.md, more than all the spans of a request. Reading the registry at each
export costs the request path nothing, and OTLP gets exactly the numbers
``/metrics`` shows, cumulative since the app started. On the way, names and labels take their
OpenTelemetry spellings (``gateway_request_duration_seconds`` becomes
``gen_ai.server.request.duration``, label ``model`` becomes ``gateway.model``...).
Histograms carry no min and max (Prometheus keeps neither), which OTLP allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)
CUMULATIVE = AggregationTemporality.CUMULATIVE

NAMES: dict[str, tuple[str, str]] = {
    "gateway_requests": ("gateway.requests", "{request}"),
    "gateway_request_duration_seconds": ("gen_ai.server.request.duration", "s"),
    "gateway_time_to_first_token_seconds": ("gen_ai.server.time_to_first_token", "s"),
    "gateway_tokens": ("gateway.tokens", "{token}"),
    "gateway_cost_usd": ("gateway.cost", "USD"),
    "gateway_baseline_cost_usd": ("gateway.baseline_cost", "USD"),
    "gateway_request_difficulty": ("gateway.request.difficulty", "1"),
    "gateway_upstream_attempts": ("gateway.upstream.attempts", "{attempt}"),
    "gateway_upstream_errors": ("gateway.upstream.errors", "{attempt}"),
    "gateway_fallbacks": ("gateway.fallbacks", "{fallback}"),
    "gateway_cache_entries": ("gateway.cache.entries", "{entry}"),
    "gateway_trace_spans_lost": ("gateway.trace.spans.lost", "{span}"),
}
"""Prometheus family -> OpenTelemetry name and unit; families not listed are not pushed."""
LABELS = {
    "model": "gateway.model",
    "route": "gateway.route",
    "cache": "gateway.cache",
    "status": "http.response.status_code",
    "type": "gen_ai.token.type",
    "tenant": "gateway.tenant",
    "outcome": "gateway.outcome",
    "error": "error.type",
    "from_model": "gateway.model",
    "to_model": "gateway.fallback.model",
}


def convert(registry: CollectorRegistry, start_ns: int, now_ns: int) -> list[Metric]:
    """The registry's families of `NAMES` as OpenTelemetry metric data."""
    metrics = []
    for family in registry.collect():
        named = NAMES.get(family.name)
        if named is None:
            continue
        name, unit = named
        data: Sum | Gauge | Histogram
        if family.type == "counter":
            points = [
                NumberDataPoint(_attributes(s.labels), start_ns, now_ns, s.value)
                for s in family.samples
                if s.name.endswith("_total")
            ]
            data = Sum(points, CUMULATIVE, is_monotonic=True)
        elif family.type == "gauge":
            points = [
                NumberDataPoint(_attributes(s.labels), start_ns, now_ns, s.value)
                for s in family.samples
            ]
            data = Gauge(points)
        elif family.type == "histogram":
            data = Histogram(list(_histogram_points(family.samples, start_ns, now_ns)), CUMULATIVE)
        else:
            continue
        metrics.append(Metric(name, family.documentation, unit, data))
    return metrics


def _attributes(labels: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in labels.items():
        name = LABELS.get(key, f"gateway.{key}")
        out[name] = int(value) if key == "status" and value.isdigit() else value
    return out


def _histogram_points(
    samples: Iterable[Sample], start_ns: int, now_ns: int
) -> Iterator[HistogramDataPoint]:
    """Prometheus's cumulative ``_bucket`` series, ``_sum`` and ``_count`` per label set, as
    OTLP points (per-bucket counts; the ``+Inf`` bucket is the last count, not a bound)."""
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for sample in samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": []})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        bounds = [le for le, _ in buckets if le != float("inf")]
        cumulative = [count for _, count in buckets]
        counts = [int(c - p) for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
        yield HistogramDataPoint(
            attributes=_attributes(dict(key)),
            start_time_unix_nano=start_ns,
            time_unix_nano=now_ns,
            count=int(entry.get("count", 0)),
            sum=entry.get("sum", 0.0),
            bucket_counts=counts,
            explicit_bounds=bounds,
            min=None,  # type: ignore[arg-type]
            max=None,  # type: ignore[arg-type]
        )


class RegistryPusher:
    """Exports the registry every ``interval_s`` on a daemon thread, and once more at stop."""

    def __init__(
        self,
        registry: CollectorRegistry,
        exporter: MetricExporter,
        resource: Resource,
        interval_s: float,
        scope: str = "gateway",
    ) -> None:
        self._registry = registry
        self._exporter = exporter
        self._resource = resource
        self._scope = InstrumentationScope(scope)
        self._interval_s = interval_s
        self._start_ns = time.time_ns()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.push()

    def push(self, timeout_ms: float = 10_000) -> bool:
        """Export now; False when the export failed (it is logged, and retried next time)."""
        with self._lock:
            try:
                metrics = convert(self._registry, self._start_ns, time.time_ns())
                data = MetricsData(
                    [ResourceMetrics(self._resource, [ScopeMetrics(self._scope, metrics, "")], "")]
                )
                result = self._exporter.export(data, timeout_millis=timeout_ms)
            except Exception:
                log.warning("OTLP metric export failed", exc_info=True)
                return False
            return result.name == "SUCCESS"

    def shutdown(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self.push()
        self._exporter.shutdown()
