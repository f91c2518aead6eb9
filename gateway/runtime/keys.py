"""Key rings: which owner (a tenant, or the admin) an API key belongs to.

Keys are held only as SHA-256 digests (a heap dump or a debug print shows no key) and every
stored digest is compared with ``hmac.compare_digest``, so the time taken reveals neither
which key matched nor how much of a wrong key was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Which owner (a tenant, or the admin) a bearer key belongs to."""

    def __init__(self, keys: Mapping[str, Iterable[str]]) -> None:
        self._entries = tuple((_digest(k), owner) for owner, ks in keys.items() for k in ks)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def owner(self, key: str) -> str | None:
        digest = _digest(key)
        found = None
        for stored, owner in self._entries:  # no early exit: constant time over the ring
            if hmac.compare_digest(stored, digest):
                found = owner
        return found


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()
