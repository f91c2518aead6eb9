"""A memo of per-text work for the meaning guard, bounded in bytes as well as in entries.

Why not ``functools.lru_cache``: it keys by the whole text and bounds only the count, so 8192
pasted documents of 4 MiB each would be 32 GiB of keys. Here the key is a 128-bit BLAKE2b digest
of the text (the callers pass a bounded prefix, so hashing it costs microseconds), and each
value is charged its approximate size against ``max_bytes``; the least recently used go first.
Why not cachetools (which the exact store uses): its LRU has one bound, and charging each entry
at least ``max_bytes / max_entries`` to get the second would make the byte count an overstatement
rather than what is held.

Thread-safe: the guard runs in the semantic cache's worker and in tests' threads alike.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TextMemo"]

V = TypeVar("V")

_KEY_BYTES = 120
"""What one entry costs besides its value: the 16-byte digest as a bytes object, the ordered
dict's node, the (value, size) tuple."""


class TextMemo(Generic[V]):
    """``memo(text)`` is ``compute(text)``, remembered. See the module docstring."""

    def __init__(
        self,
        compute: Callable[[str], V],
        sizeof: Callable[[V], int],
        *,
        max_entries: int = 8192,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._compute = compute
        self._sizeof = sizeof
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._values: OrderedDict[bytes, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.size_bytes = 0
        """Approximate bytes held now."""

    def __len__(self) -> int:
        return len(self._values)

    def __call__(self, text: str) -> V:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
                return found[0]
        value = self._compute(text)  # outside the lock: two threads may compute it once each
        size = self._sizeof(value) + _KEY_BYTES
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._values:
                self._values[key] = (value, size)
                self.size_bytes += size
                while len(self._values) > self.max_entries or self.size_bytes > self.max_bytes:
                    _, (_, dropped) = self._values.popitem(last=False)
                    self.size_bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.size_bytes = 0
