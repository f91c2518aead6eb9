"""Live requests in flight: what batch work yields to, and what autoscalers scale replicas on
(`gateway_requests_in_flight`).

Counted by an ASGI middleware (`gateway.api.in_flight`) around every model request, so that a
streamed answer counts until its last byte. Each live request's duration is kept too, apart for
those that ran while batch lines were in flight (``shared``) and those that did not
(``alone``): what the batch runner's pace (`gateway.batch.pace`) compares with the policy's
bound. A few attribute updates, a clock read and a deque append per request: cheap enough for
the request path.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

SAMPLES = 32
"""Durations kept of each kind (the most recent)."""


class LiveTraffic:
    __slots__ = ("_last_end", "alone", "batch_lines", "in_flight", "shared", "shared_count")

    def __init__(self) -> None:
        self.in_flight = 0
        self._last_end = float("-inf")
        self.batch_lines: Callable[[], int] = lambda: 0
        """How many batch lines are in flight now (the batch runner sets it)."""
        self.alone: deque[float] = deque(maxlen=SAMPLES)
        """Seconds of the latest live requests during which no batch line was in flight."""
        self.shared: deque[float] = deque(maxlen=SAMPLES)
        """Seconds of the latest live requests that ran beside batch lines."""
        self.shared_count = 0
        """Shared requests ever recorded: how the pace sees that a new one came in."""

    def enter(self) -> tuple[float, bool]:
        """A live request starts; give what this returns to `leave`."""
        self.in_flight += 1
        return time.monotonic(), self.batch_lines() > 0

    def leave(self, entered: tuple[float, bool]) -> None:
        self.in_flight -= 1
        started, batch_then = entered
        self._last_end = now = time.monotonic()
        if batch_then or self.batch_lines() > 0:
            self.shared.append(now - started)
            self.shared_count += 1
        else:
            self.alone.append(now - started)

    def busy(self, quiet_s: float) -> bool:
        """A live request is in flight, or one ended less than ``quiet_s`` ago (the next one
        of an interactive client is likely close behind)."""
        return self.in_flight > 0 or time.monotonic() - self._last_end < quiet_s
