"""Per-request cost of the gateway's telemetry, and ours against the OpenTelemetry SDK's.

One synthetic request goes through exactly the telemetry calls the request path makes (the
root span with the request's attributes, a span per stage: exact cache, embed, semantic cache,
classify, route, call with one attempt and its ``traceparent`` for the upstream, ledger; then
``request_done``: the span's end, the Prometheus metrics and the JSON log line), with no other
work, so that the figure is the telemetry's own cost. Modes, interleaved round by round (the
order rotated each round) so that the load of a shared machine hits them all alike:

- ``none``: the same code shape with no telemetry calls at all (the floor);
- ``off, spans only``: tracing off, the span calls alone (what "off" costs the span API);
- ``off``: tracing off (the default): the silent trace, the Prometheus metrics, the log line;
- ``on, SDK``: the same spans through the SDK alone (its tracer, BatchSpanProcessor and
  OTLP/HTTP protobuf exporter: `sdk_side.SdkTraces`), to a real receiver on 127.0.0.1;
- ``on``: tracing on as the gateway does it (lean spans, a bounded queue, OTLP/HTTP JSON
  encoded on the export thread), to the same receiver;
- ``on+metrics bridge``: ``on`` plus the Prometheus registry pushed over OTLP every 1 s
  (`gateway.telemetry.otlp_metrics`);
- ``on+SDK metrics``: ``on`` plus the SDK's own metrics: each observation also recorded on an
  OpenTelemetry instrument, exported by a PeriodicExportingMetricReader every 1 s
  (`sdk_side.SdkInstruments`).

The receiver runs in a process of its own; the log line goes to a JSON handler writing to
/dev/null. Each traced mode's export work is flushed inside its round, so it counts in its
"process cpu/req".

    .venv/bin/python bench/telemetry/run.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.telemetry.sdk_side import SdkInstruments, SdkTraces
from gateway.ledger.record import LedgerRecord
from gateway.pipeline.normalize import ChatRequest
from gateway.policy.schema import ModelConfig
from gateway.telemetry import (
    Stage,
    Telemetry,
    TelemetryConfig,
    attempt,
    configure_logging,
    upstream_headers,
)
from gateway.telemetry.config import SpanExportSettings
from tests.integration.telemetry.receiver import OtlpReceiver

STAGES: tuple[Stage, ...] = ("exact_cache", "embed", "semantic_cache", "classify", "route")
CONFIG = ModelConfig(
    provider="openai_compatible", base_url="http://127.0.0.1:8001/v1", model="smollm2"
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-x"}


def request(i: int) -> ChatRequest:
    return ChatRequest(
        request_id=f"req_{i:032x}",
        tenant="team-a",
        model="auto",
        stream=False,
        wants_usage=False,
        body=MappingProxyType(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "Say hello"}],
                "temperature": 0.2,
                "max_tokens": 64,
            }
        ),
        tags=MappingProxyType({}),
        has_tools=False,
        has_images=False,
        prompt_tokens=3,
    )


def record(chat: ChatRequest) -> LedgerRecord:
    return LedgerRecord(
        time=time.time(),
        request_id=chat.request_id,
        tenant="team-a",
        route="default",
        model="local-small",
        cache="miss",
        input_tokens=12,
        output_tokens=30,
        cost_usd=Decimal("0.00000084"),
        baseline_cost_usd=Decimal("0.000330"),
        latency_ms=12.5,
        difficulty=0.3,
    )


def with_telemetry(
    telemetry: Telemetry, done: bool = True, instruments: SdkInstruments | None = None
) -> Callable[[int], None]:
    """The request's telemetry calls; ``done=False`` ends the span only (no metrics, no log);
    ``instruments``: each observation also recorded on the SDK's instruments."""

    def one(i: int) -> None:
        chat = request(i)
        trace = telemetry.start_request(HEADERS, chat.request_id)
        with trace.activate():
            trace.describe(chat)
            for stage in STAGES:
                with trace.stage(stage):
                    pass
            with trace.stage("call"), attempt("local-small", CONFIG, 1):
                upstream_headers()
            if instruments is not None:
                instruments.observe_attempt("local-small", "ok")
            with trace.stage("ledger"):
                finished = record(chat)
            if done:
                telemetry.request_done(trace, finished)
            else:
                trace.end(finished)
            if instruments is not None:
                instruments.observe_request(finished)

    return one


def with_sdk(traces: SdkTraces) -> Callable[[int], None]:
    def one(i: int) -> None:
        traces.request(request(i), STAGES, CONFIG, record)

    return one


def bare(i: int) -> None:
    chat = request(i)
    for _stage in STAGES:
        pass
    record(chat)


def measure(fn: Callable[[int], None], n: int, start: int) -> tuple[list[float], list[float]]:
    """Wall time and this thread's CPU time of each request, in microseconds."""
    wall, cpu = [], []
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(start, start + n):
        t0, c0 = clock(), thread_clock()
        fn(i)
        cpu.append((thread_clock() - c0) / 1000)
        wall.append((clock() - t0) / 1000)
    return wall, cpu


def calibrate() -> float:
    """µs for ``sum(range(1000))``: how fast this machine is right now (load slows it)."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def _receive(queue: Any, stop: Any) -> None:
    with OtlpReceiver() as receiver:
        queue.put(receiver.endpoint)
        stop.wait()
        queue.put((len(receiver.spans()), len(receiver.metrics)))


@contextmanager
def receiver_process() -> Iterator[tuple[str, list[int]]]:
    """An `OtlpReceiver` in a process of its own: decoding what it receives (JSON is slower
    to decode than protobuf) must not count as, or compete under the GIL with, the modes'
    own work. Gives the endpoint, and after the block the spans and metric exports received."""
    context = multiprocessing.get_context("spawn")
    queue, stop = context.Queue(), context.Event()
    process = context.Process(target=_receive, args=(queue, stop), daemon=True)
    process.start()
    received: list[int] = []
    try:
        yield queue.get(timeout=60), received
    finally:
        stop.set()
        received += queue.get(timeout=60)
        process.join(10)


class Flushable(Protocol):
    def force_flush(self) -> Any: ...

    def shutdown(self) -> Any: ...


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    queue = args.requests * 12  # room for every span of a round: none dropped, all counted

    devnull = open(os.devnull, "w")  # noqa: SIM115
    configure_logging("info", "json", devnull)
    before = calibrate()
    export = SpanExportSettings(max_queue=queue)
    with receiver_process() as (endpoint, received):
        sdk = SdkTraces(endpoint, queue)
        on = Telemetry(TelemetryConfig(otlp_endpoint=endpoint, metrics=False, span_export=export))
        bridge = Telemetry(
            TelemetryConfig(otlp_endpoint=endpoint, metric_interval_s=1.0, span_export=export)
        )
        on_sdk_metrics = Telemetry(
            TelemetryConfig(otlp_endpoint=endpoint, metrics=False, span_export=export)
        )
        instruments = SdkInstruments(endpoint, interval_s=1.0)
        off = Telemetry()
        modes: dict[str, tuple[Callable[[int], None], list[Flushable]]] = {
            "none": (bare, []),
            "off, spans only": (with_telemetry(off, done=False), []),
            "off": (with_telemetry(off), []),
            "on, SDK": (with_sdk(sdk), [sdk]),
            "on": (with_telemetry(on), [on]),
            "on+metrics bridge": (with_telemetry(bridge), [bridge]),
            "on+SDK metrics": (
                with_telemetry(on_sdk_metrics, instruments=instruments),
                [on_sdk_metrics, instruments],
            ),
        }
        for fn, flush in modes.values():  # warm up: imports, label children, caches
            measure(fn, 300, 0)
            for each in flush:
                each.force_flush()
        wall: dict[str, list[float]] = {name: [] for name in modes}
        cpu: dict[str, list[float]] = {name: [] for name in modes}
        process: dict[str, list[float]] = {name: [] for name in modes}
        gc.collect()
        names = list(modes)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn, flush = modes[name]
                p0 = time.process_time_ns()
                w, c = measure(fn, args.requests, (r + 1) * 1_000_000)
                for each in flush:  # the export's encoding counts for its mode
                    each.force_flush()
                process[name].append((time.process_time_ns() - p0) / 1000 / args.requests)
                wall[name] += w
                cpu[name] += c
        for _fn, flush in modes.values():
            for each in flush:
                each.shutdown()
    spans, metric_posts = received
    logging.getLogger().handlers.clear()
    devnull.close()
    report(args, wall, cpu, process, spans, metric_posts, before, calibrate())


def report(
    args: argparse.Namespace,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    process: dict[str, list[float]],
    spans: int,
    metric_posts: int,
    before: float,
    after: float,
) -> None:
    traced = sum(1 for name in wall if name.startswith("on"))
    expected = (args.rounds * args.requests + 300) * 9 * traced
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; sum(range(1000)) took {before:.1f} / {after:.1f} us "
        f"(before / after: how fast the machine was; lower is faster)"
    )
    print(
        f"{args.rounds} rounds x {args.requests} requests per mode; {spans} of {expected} spans "
        f"received over OTLP/HTTP; {metric_posts} OTLP metric exports"
    )
    print(
        f"{'mode':<19}{'wall p50':>9}{'p90':>8}{'p99':>8}{'cpu p50':>9}{'+cpu p50':>10}"
        f"{'process cpu/req':>17}"
    )
    floor = statistics.median(cpu["none"])
    row: dict[str, tuple[float, float, float]] = {}
    for name in wall:
        q = statistics.quantiles(wall[name], n=100)
        c50 = statistics.median(cpu[name])
        p_cpu = statistics.median(process[name])
        row[name] = (c50, q[98], p_cpu)
        print(
            f"{name:<19}{statistics.median(wall[name]):>9.1f}{q[89]:>8.1f}{q[98]:>8.1f}"
            f"{c50:>9.1f}{c50 - floor:>10.1f}{p_cpu:>17.1f}"
        )
    print("(microseconds; +cpu p50: above 'none'; process cpu/req: all threads, exports included)")

    def ratios(label: str, theirs: str, ours: str, base: str) -> None:
        """What ``theirs`` and ``ours`` add over ``base``, and how many times ours."""
        (t_cpu, t_p99, t_proc), (o_cpu, o_p99, o_proc), (b_cpu, _, b_proc) = (
            row[theirs],
            row[ours],
            row[base],
        )
        added = [t_cpu - b_cpu, o_cpu - b_cpu, t_proc - b_proc, o_proc - b_proc]
        print(
            f"{label}, added over '{base}' by '{theirs}' / '{ours}': request-thread cpu p50 "
            f"{added[0]:.1f} / {added[1]:.1f} us ({added[0] / added[1]:.2f}x), process cpu/req "
            f"{added[2]:.1f} / {added[3]:.1f} us ({added[2] / added[3]:.2f}x); wall p99 "
            f"{t_p99:.0f} / {o_p99:.0f} us ({t_p99 / o_p99:.2f}x)"
        )

    ratios("spans", "on, SDK", "on", "off")
    # Against 'off', not 'on': the bridge adds nothing to the request path, so its cost over
    # 'on' is the noise between two runs of the same code, too small to divide by.
    ratios("traced, with OTLP metrics", "on+SDK metrics", "on+metrics bridge", "off")
    (s_cpu, _, s_proc), (b_cpu, _, b_proc), (o_cpu, _, o_proc) = (
        row["on+SDK metrics"],
        row["on+metrics bridge"],
        row["on"],
    )
    print(
        f"metrics alone: SDK instruments minus bridge {s_cpu - b_cpu:.1f} us request-thread cpu "
        f"p50, {s_proc - b_proc:.1f} us process cpu/req; bridge minus 'on' (same request path: "
        f"noise) {b_cpu - o_cpu:.1f} / {b_proc - o_proc:.1f} us"
    )


if __name__ == "__main__":
    main()
