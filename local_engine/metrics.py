"""Prometheus metrics of one engine, in a registry of its own.

A registry per engine (not the process-wide default) lets tests run several engines and lets
an in-process host (the gateway) merge ``engine.metrics.registry`` into its own ``/metrics``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from local_engine.throughput import Throughput

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)


class RateMeter:
    """Events per second over a sliding window of whole seconds."""

    def __init__(self, window_s: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._buckets: collections.deque[list[float]] = collections.deque()  # [second, count]

    def add(self, count: int) -> None:
        second = float(int(self._clock()))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, float(count)])
        self._trim(second)

    def rate(self) -> float:
        now = float(int(self._clock()))
        self._trim(now)
        return sum(count for _, count in self._buckets) / self._window

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self._window:
            self._buckets.popleft()


class EngineMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, labels = self.registry, ["model"]
        self.queue_depth = Gauge(
            "local_engine_queue_depth", "Requests waiting for a batch slot.", labels, registry=r
        ).labels(model)
        self.running = Gauge(
            "local_engine_running_requests", "Requests holding a batch slot.", labels, registry=r
        ).labels(model)
        self.generated_tokens = Counter(
            "local_engine_generated_tokens", "Completion tokens generated.", labels, registry=r
        ).labels(model)
        self.prompt_tokens = Counter(
            "local_engine_prompt_tokens", "Prompt tokens admitted.", labels, registry=r
        ).labels(model)
        self.tokens_per_second = Gauge(
            "local_engine_tokens_per_second",
            "Completion tokens per second over the last 10 s.",
            labels,
            registry=r,
        ).labels(model)
        self.ttft = Histogram(
            "local_engine_time_to_first_token_seconds",
            "From admission to the first generated token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(model)
        self.duration = Histogram(
            "local_engine_request_duration_seconds",
            "From admission to the last token.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        ).labels(model)
        self._requests = Counter(
            "local_engine_requests",
            "Finished requests by outcome (stop, length, cancelled, error, rejected).",
            ["model", "outcome"],
            registry=r,
        )
        self.preemptions = Counter(
            "local_engine_preemptions",
            "Requests paused for a request of a better priority (resumed by recompute).",
            labels,
            registry=r,
        ).labels(model)
        self.kv_cache_usage = Gauge(
            "local_engine_kv_cache_usage_ratio", "Share of the KV cache in use.", labels, registry=r
        ).labels(model)
        self.prefix_queried = Counter(
            "local_engine_prefix_cache_queried_tokens",
            "Prompt tokens of finished requests, all looked up in the prefix cache.",
            labels,
            registry=r,
        ).labels(model)
        self.prefix_reused = Counter(
            "local_engine_prefix_cache_reused_tokens",
            "Prompt tokens whose keys and values came from the prefix cache (usage's "
            "cached_tokens).",
            labels,
            registry=r,
        ).labels(model)
        self.drafted = Counter(
            "local_engine_spec_draft_tokens",
            "Speculative draft tokens proposed (prompt lookup).",
            labels,
            registry=r,
        ).labels(model)
        self.accepted = Counter(
            "local_engine_spec_accepted_tokens",
            "Speculative draft tokens the model confirmed.",
            labels,
            registry=r,
        ).labels(model)
        self.prefix_hit_rate = Gauge(
            "local_engine_prefix_cache_hit_ratio",
            "Reused over queried prompt tokens, since start.",
            labels,
            registry=r,
        ).labels(model)
        self.acceptance_rate = Gauge(
            "local_engine_spec_acceptance_ratio",
            "Accepted over drafted speculative tokens, since start.",
            labels,
            registry=r,
        ).labels(model)
        self.prefill_rate = Gauge(
            "local_engine_prefill_tokens_per_second",
            "Prompt tokens computed per second of busy time, over the last 60 s (0: none).",
            labels,
            registry=r,
        ).labels(model)
        self.decode_rate = Gauge(
            "local_engine_decode_tokens_per_second",
            "Completion tokens per second of busy time, over the last 60 s (0: none).",
            labels,
            registry=r,
        ).labels(model)
        self._model = model
        self._rate = RateMeter()
        self.tokens_per_second.set_function(self._rate.rate)
        self.totals = {"queried": 0, "reused": 0, "drafted": 0, "accepted": 0}
        self.prefix_hit_rate.set_function(lambda: self._ratio("reused", "queried"))
        self.acceptance_rate.set_function(lambda: self._ratio("accepted", "drafted"))

    def watch_throughput(self, rates: Callable[[], Throughput]) -> None:
        """Read the backend's measured throughput at each scrape."""
        self.prefill_rate.set_function(lambda: rates().prefill_tokens_per_s or 0.0)
        self.decode_rate.set_function(lambda: rates().decode_tokens_per_s or 0.0)

    def prompt_served(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prefix_queried.inc(prompt_tokens)
        self.prefix_reused.inc(cached_tokens)
        self.totals["queried"] += prompt_tokens
        self.totals["reused"] += cached_tokens

    def speculated(self, drafted: int, accepted: int) -> None:
        self.drafted.inc(drafted)
        self.accepted.inc(accepted)
        self.totals["drafted"] += drafted
        self.totals["accepted"] += accepted

    def _ratio(self, part: str, whole: str) -> float:
        return self.totals[part] / self.totals[whole] if self.totals[whole] else 0.0

    def request_done(self, outcome: str) -> None:
        self._requests.labels(self._model, outcome).inc()

    def tokens_generated(self, count: int) -> None:
        if count > 0:
            self.generated_tokens.inc(count)
            self._rate.add(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
