"""Measured prefill and decode throughput: tokens per second of busy time, over a sliding window.

Why busy time: a price per token derived from a GPU's hourly price must divide by what the
hardware does while it works, not by the traffic it happened to get (an idle engine would look
slow and its tokens dear). Every forward pass is recorded with its wall time and how many of its
tokens were prompt tokens (prefill) and how many were completion tokens it produced (decode; a
verified speculative draft counts the tokens it kept, so speculation shows up as a faster
decode).

A continuous batch mixes both in one pass. Decode throughput is taken from passes without
prompt tokens; for a pass with some, its decode tokens are charged at that decode rate and the
rest of its time is prefill time. A prefill rate is therefore known once the window holds one
pass with prompt tokens, a decode rate once it holds one pass without.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
MIN_PREFILL_SHARE = 0.05
"""At least this share of a mixed pass is prefill time, whatever the decode rate says."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """Tokens per second of busy time; None until the window holds a pass of that kind."""

    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None


@dataclass(frozen=True, slots=True)
class _Pass:
    at: float
    seconds: float
    prefill: int
    decode: int


class ThroughputMeter:
    """Thread-safe: the batching thread and the solo lane's thread record, the event loop reads."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self._window = window_s
        self._clock = clock
        self._passes: collections.deque[_Pass] = collections.deque()
        self._lock = threading.Lock()

    def record(self, seconds: float, prefill_tokens: int, decode_tokens: int) -> None:
        """One forward pass: its wall time and its prompt and completion tokens."""
        if seconds <= 0 or prefill_tokens + decode_tokens <= 0:
            return
        now = self._clock()
        with self._lock:
            self._passes.append(_Pass(now, seconds, prefill_tokens, decode_tokens))
            self._trim(now)

    def rates(self) -> Throughput:
        now = self._clock()
        with self._lock:
            self._trim(now)
            passes = list(self._passes)
        decode_s = sum(p.seconds for p in passes if not p.prefill)
        decoded = sum(p.decode for p in passes if not p.prefill)
        decode_rate = decoded / decode_s if decode_s > 0 else None
        prefill_s, prefilled = 0.0, 0
        for p in (p for p in passes if p.prefill):
            charged = p.decode / decode_rate if decode_rate else 0.0
            prefill_s += max(p.seconds - charged, p.seconds * MIN_PREFILL_SHARE)
            prefilled += p.prefill
        return Throughput(prefilled / prefill_s if prefill_s > 0 else None, decode_rate)

    def _trim(self, now: float) -> None:
        while self._passes and self._passes[0].at <= now - self._window:
            self._passes.popleft()
