"""Live requests in flight: what batch work yields to, and what autoscalers scale replicas on
(`gateway_requests_in_flight`).

Counted by an ASGI middleware (`gateway.api.in_flight`) around every model request, so that a
streamed answer counts until its last byte. Two attribute updates and a clock read per
request: cheap enough for the request path.
"""

from __future__ import annotations

import time


class LiveTraffic:
    __slots__ = ("_last_end", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self._last_end = float("-inf")

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._last_end = time.monotonic()

    def busy(self, quiet_s: float) -> bool:
        """A live request is in flight, or one ended less than ``quiet_s`` ago (the next one
        of an interactive client is likely close behind)."""
        return self.in_flight > 0 or time.monotonic() - self._last_end < quiet_s
