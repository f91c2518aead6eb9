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


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    model: str = ""
    choices: list[_Choice] = []
    system_fingerprint: str | None = None


def from_reply(body: bytes, **known: Any) -> CachedAnswer | None:
    """The canonical form of a completion, or None when it must not be cached."""
    try:
        completion = msgspec.json.decode(body, type=_Completion)
    except msgspec.MsgspecError:
        return None
    if len(completion.choices) != 1:
        return None
    choice = completion.choices[0]
    message = choice.message
    if (
        message is None
        or message.content is None
        or message.tool_calls
        or message.function_call
        or choice.finish_reason not in ("stop", "length")
    ):
        return None
    return CachedAnswer(
        upstream_model=completion.model,
        content=message.content,
        finish_reason=choice.finish_reason,
        system_fingerprint=completion.system_fingerprint,
        **known,
    )


def from_stream(
    pieces: list[str],
    finish_reason: str | None,
    upstream_model: str,
    plain_text: bool,
    **known: Any,
) -> CachedAnswer | None:
    """The canonical form of a finished stream, or None when it must not be cached."""
    if not plain_text or finish_reason not in ("stop", "length"):
        return None
    return CachedAnswer(
        upstream_model=upstream_model, content="".join(pieces), finish_reason=finish_reason, **known
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
