"""How many batch lines the runner keeps in flight while live traffic is active: as many as
keep live requests within the policy's ``batch.live_latency_bound``, found by measuring.

NOTE: the algorithm (additive increase, multiplicative decrease, as TCP finds a link's rate).
`LiveTraffic` keeps the durations of the latest live requests that ran with no batch line in
flight (*alone*) and of those that ran beside batch lines (*shared*). Once the shared requests
since the last change number `DECIDE_AFTER`, their median over the median alone is the
slowdown batch work causes: above the bound, the limit halves; within it, the limit grows by
one, up to ``batch.concurrency``. It starts at ``batch.concurrency_while_live``. At 0, no line
starts while live traffic is active, so no shared request can tell whether one would do: after
`PROBE_S` the limit tries 1 again.

Past the bound, the quiet time (how long after a live request the limit still holds, from
``batch.live_quiet_s``) doubles too, up to `MAX_QUIET_S`: an interactive client pauses between
its requests, and if the pause outlasts the quiet time the runner refills to the full
concurrency, so each request meets lines started in the pause before it, which no limit
"while live" reaches. The quiet time stays at what it came to (a client's pauses do not
shorten); once live traffic has been quiet that long, the batch runs at full concurrency.

What this cannot see: a mix of live requests that changes (short ones alone, long ones
shared) reads as a slowdown, and the reverse as a speed-up; the bound holds over a steady mix.
With a model that schedules by priority (``priority_scheduling``, the local engine), batch
lines pause while live ones run, the slowdown stays small, and the limit climbs to the full
concurrency; with a model elsewhere (a hosted API), batch lines slow nothing down here and
the same happens. The limit falls where batch work does compete: a shared engine without
priorities, or this replica's own CPU.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

from gateway.policy.batch import BatchConfig
from gateway.runtime.live import LiveTraffic

log = logging.getLogger(__name__)

DECIDE_AFTER = 3
"""Shared live requests that each decision waits for (fewer: one slow request decides)."""
MIN_ALONE = 4
"""Live requests alone needed before a slowdown can be measured at all."""
PROBE_S = 30.0
MAX_QUIET_S = 30.0


class Pace:
    def __init__(self, live: LiveTraffic, clock: Callable[[], float] = time.monotonic) -> None:
        self._live, self._clock = live, clock
        self._limit: int | None = None
        self._quiet_s = 0.0
        self._seen = 0
        self._changed_at = clock()

    def while_live(self, config: BatchConfig) -> int:
        """Lines that may be in flight while live traffic is active."""
        if config.live_latency_bound is None:
            return config.concurrency_while_live
        if self._limit is None:
            self._limit = config.concurrency_while_live
        fresh = self._live.shared_count - self._seen
        if fresh >= DECIDE_AFTER and len(self._live.alone) >= MIN_ALONE:
            self._seen = self._live.shared_count
            shared = list(self._live.shared)[-fresh:]
            slowdown = statistics.median(shared) / statistics.median(self._live.alone)
            within = slowdown <= config.live_latency_bound
            self._move(self._limit + 1 if within else self._limit // 2)
            if not within:
                self._quiet_s = min(MAX_QUIET_S, 2 * self.quiet_s(config))
                log.info(
                    "batch runner: live requests took %.2fx their time alone beside batch "
                    "lines (bound %.2fx); at most %d lines while live traffic is active, and "
                    "for %.1f s after",
                    slowdown,
                    config.live_latency_bound,
                    self._limit,
                    self._quiet_s,
                )
        elif self._limit == 0 and self._clock() - self._changed_at > PROBE_S:
            self._move(1)
        self._limit = min(self._limit, config.concurrency)
        return self._limit

    def quiet_s(self, config: BatchConfig) -> float:
        """How long after a live request the runner keeps to `while_live`."""
        if config.live_latency_bound is None:
            return config.live_quiet_s
        return max(config.live_quiet_s, self._quiet_s)

    def _move(self, limit: int) -> None:
        if limit != self._limit:
            self._limit, self._changed_at = limit, self._clock()
