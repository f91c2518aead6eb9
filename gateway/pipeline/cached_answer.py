"""A cached answer in one canonical form, replayed as a completion or as a stream.

Both caches store this form rather than the upstream's bytes, so an answer first produced as a
stream can serve a non-streamed request and the other way round. Only plain text answers of
one choice are ever cached: tool calls, several choices and log-probabilities are not.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import msgspec

from gateway.pipeline.reply import Answer
from gateway.providers import Usage


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    """The policy model that produced the answer."""
    upstream_model: str
    """The ``model`` the provider put in its response."""
    content: str
    finish_reason: str
    usage: Usage
    cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None
    created: float
    system_fingerprint: str | None = None


def encode(answer: CachedAnswer) -> bytes:
    return msgspec.json.encode(answer)


def decode(data: bytes) -> CachedAnswer:
    """Raises ``msgspec.MsgspecError`` for a corrupt entry."""
    return msgspec.json.decode(data, type=CachedAnswer)


def cached(
    answer: Answer,
    *,
    model: str,
    usage: Usage,
    cost_usd: Decimal | None,
    baseline_cost_usd: Decimal | None,
) -> CachedAnswer | None:
    """The canonical form of a complete answer, or None when it must not be cached."""
    if not answer.cacheable:
        return None
    assert answer.finish_reason is not None  # a cacheable answer has one
    return CachedAnswer(
        model=model,
        upstream_model=answer.upstream_model,
        content=answer.text,
        finish_reason=answer.finish_reason,
        usage=usage,
        cost_usd=cost_usd,
        baseline_cost_usd=baseline_cost_usd,
        created=time.time(),
        system_fingerprint=answer.system_fingerprint,
    )


def completion(answer: CachedAnswer) -> bytes:
    """A ``chat.completion`` body with a fresh id; ``usage`` is the original answer's."""
    return msgspec.json.encode(
        {
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.upstream_model,
            "system_fingerprint": answer.system_fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": answer.usage,
        }
    )


def chunks(answer: CachedAnswer, wants_usage: bool) -> list[bytes]:
    """The SSE ``data`` payloads of the answer as a stream, as OpenAI sends them."""
    base: dict[str, Any] = {
        "id": _new_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": answer.upstream_model,
        "system_fingerprint": answer.system_fingerprint,
    }
    if wants_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return msgspec.json.encode(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    out = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": answer.content}),
        chunk({}, answer.finish_reason),
    ]
    if wants_usage:
        out.append(msgspec.json.encode({**base, "choices": [], "usage": answer.usage}))
    return out


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"
