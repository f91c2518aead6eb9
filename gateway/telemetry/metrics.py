"""Request metrics, served as Prometheus text on ``GET /metrics``.

prometheus_client holds the counts, in a registry of this app's own (never the process-wide
one, so that tests and several apps in one process do not share counters). When an OTLP
endpoint is set, `otlp_metrics.RegistryPusher` pushes the same registry over OTLP.

Labels are bounded by the policy (models, routes, tenants), the cache outcomes, HTTP statuses
and failure kinds; never by request ids, tags or text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.ledger.record import LedgerRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DIFFICULTY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
NONE = "none"
_M = TypeVar("_M", Counter, Histogram)
"""The label value of a model or route a request never reached (it failed before)."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=registry)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by policy model, route, cache outcome and HTTP status.",
            ["model", "route", "cache", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to its last byte, by model and cache outcome.",
            ["model", "cache"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk, by model.",
            ["model", "cache"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens, by model and type (input, cached_input, output); cache hits included.",
            ["model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "gateway_cost_usd",
            "What requests cost (USD), by model and tenant; cache hits cost 0.",
            ["model", "tenant"],
            registry=registry,
        )
        self.baseline = Counter(
            "gateway_baseline_cost_usd",
            "What the same requests would have cost at the baseline model (USD).",
            ["model", "tenant"],
            registry=registry,
        )
        self.difficulty = Histogram(
            "gateway_request_difficulty",
            "The classifier's difficulty score of routed requests.",
            buckets=DIFFICULTY_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "gateway_upstream_attempts",
            "Upstream attempts, by policy model and outcome (ok, or the failure: an HTTP "
            "status, connect, timeout, protocol).",
            ["model", "outcome"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failed upstream attempts, by policy model and error.",
            ["model", "error"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Moves from a failed model to its next fallback.",
            ["from_model", "to_model"],
            registry=registry,
        )
        self.cache_entries = Gauge(
            "gateway_cache_entries",
            "Entries in a cache (exact, semantic), read when scraped.",
            ["cache"],
            registry=registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def set_cache_size(self, cache: str, size: Callable[[], float]) -> None:
        """Report ``size()`` as ``gateway_cache_entries{cache=...}`` at each scrape or export.

        ``size`` runs on the event loop at a scrape, and on the OTLP pusher's thread: it must
        be quick, thread-safe and must not block (for Redis, return a count kept up to date
        elsewhere, never a network call)."""
        self.cache_entries.labels(cache).set_function(size)

    def watch_load(self, in_flight: Callable[[], float], queued: Callable[[], float]) -> None:
        """Report the requests being served and those waiting for a place (the policy's
        ``limits.max_concurrent_requests``) at each scrape: what autoscalers scale on (the
        same rules as `set_cache_size`: quick and thread-safe)."""
        Gauge(
            "gateway_requests_in_flight",
            "Model requests being served now (a stream until its last byte).",
            registry=self.registry,
        ).set_function(in_flight)
        Gauge(
            "gateway_requests_queued",
            "Requests waiting for a place under the policy's concurrency limit.",
            registry=self.registry,
        ).set_function(queued)

    def count_lost_spans(self, lost: Callable[[], float]) -> None:
        """Report ``lost()`` as ``gateway_trace_spans_lost_total`` at each scrape or export
        (the same rules as `set_cache_size`: quick and thread-safe)."""
        self.registry.register(
            _ReadCounter(
                "gateway_trace_spans_lost",
                "Spans that never reached the trace collector (queue full, or export failed).",
                lost,
            )
        )

    def observe_request(self, record: LedgerRecord) -> None:
        """Count one finished request from its ledger record."""
        model = record.model or NONE
        cache = record.cache
        child = self._child
        child(self.requests, (model, record.route or NONE, cache, str(record.status))).inc()
        child(self.latency, (model, cache)).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            child(self.ttft, (model, cache)).observe(record.ttft_ms / 1000)
        if record.input_tokens:
            child(self.tokens, (model, "input")).inc(record.input_tokens)
        if record.cached_input_tokens:
            child(self.tokens, (model, "cached_input")).inc(record.cached_input_tokens)
        if record.output_tokens:
            child(self.tokens, (model, "output")).inc(record.output_tokens)
        if record.cost_usd is not None:
            child(self.cost, (model, record.tenant)).inc(float(record.cost_usd))
        if record.baseline_cost_usd is not None:
            child(self.baseline, (model, record.tenant)).inc(float(record.baseline_cost_usd))
        if record.difficulty is not None:
            self.difficulty.observe(record.difficulty)

    def observe_attempt(self, model: str, outcome: str) -> None:
        """Count one upstream attempt: ``ok``, or its failure (a status, ``timeout``...)."""
        self._child(self.attempts, (model, outcome)).inc()
        if outcome != "ok":
            self._child(self.upstream_errors, (model, outcome)).inc()

    def observe_fallback(self, from_model: str, to_model: str) -> None:
        self._child(self.fallbacks, (from_model, to_model)).inc()

    def _child(self, metric: _M, labels: tuple[str, ...]) -> _M:
        """``metric.labels(*labels)``, remembered: its validation and lock cost more than the
        increment itself. Label values are bounded (see the module's docstring), so is this."""
        key = (id(metric), labels)
        found: _M | None = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for a scrape (OpenMetrics when ``accept`` asks), and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _ReadCounter(Collector):
    """A counter whose value is read from elsewhere when collected (prometheus_client's
    `Counter` can only be incremented, and the count lives in the span exporter)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())
