"""Session stickiness: the turns of one conversation stay on the model of its first turn.

Switching models mid-conversation changes tone and capabilities under the user's feet, so with
``routing.sticky_sessions`` the gateway remembers which model answered a conversation's first
turn. A conversation is named by its ``x-session-id`` header or, without one, by the hash of its
opening messages (system prompt and first user message), which every later turn repeats.
Memory is per process (a TTL-bounded LRU); replicas behind a load balancer each keep their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from cachetools import TTLCache


def session_key(tenant: str, session_id: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
    if session_id:
        return f"{tenant}\0id\0{session_id}"
    opening = []
    for message in messages:
        opening.append(message)
        if message.get("role") == "user":
            break
    digest = hashlib.sha256(msgspec.json.encode(opening)).hexdigest()[:32]
    return f"{tenant}\0msgs\0{digest}"


class Sessions:
    def __init__(self, ttl_s: float, max_sessions: int) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._models: TTLCache[str, str] = TTLCache(maxsize=max_sessions, ttl=ttl_s)

    def model_of(self, key: str) -> str | None:
        return self._models.get(key)

    def remember(self, key: str, model: str) -> None:
        """Record the first answer's model; later turns never overwrite it."""
        if key not in self._models:
            self._models[key] = model
