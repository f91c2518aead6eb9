"""Live requests in flight, counted by every door, so that batch work can yield to them.

Two attribute updates and a clock read per request: cheap enough for the request path. A
streamed answer counts until its door returns the stream (its head), not to its last chunk.
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
