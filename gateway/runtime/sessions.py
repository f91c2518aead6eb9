"""Session stickiness: the turns of one conversation stay on the model of its first turn.

Switching models mid-conversation changes tone and capabilities under the user's feet, so with
``routing.sticky_sessions`` the gateway remembers which model answered a conversation's first
turn. A conversation is named by its ``x-session-id`` header or, without one, by the hash of its
opening messages (system prompt and first user message), which every later turn repeats.
Memory is per process (a TTL-bounded LRU of ``max_sessions``); replicas behind a load balancer
each keep their own. A key is a 32-character digest whatever the id or the messages, so an entry
costs the same (about 200 bytes) however long the client's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from cachetools import TTLCache


def session_key(tenant: str, session_id: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation's key: a digest of the tenant and its ``x-session-id``, or else of the
    tenant and its opening messages."""
    digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass"))
    if session_id:
        digest.update(b"\0id\0" + session_id.encode("utf-8", "surrogatepass"))
    else:
        opening = []
        for message in messages:
            opening.append(message)
            if message.get("role") == "user":
                break
        digest.update(b"\0msgs\0" + msgspec.json.encode(opening))
    return digest.hexdigest()[:32]


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
