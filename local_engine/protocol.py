"""OpenAI Chat Completions wire format: parse a request body, build responses and stream chunks.

The only module that reads or writes wire JSON. `parse_chat_request` validates a body into a
frozen `ChatRequest` (or raises a 400 `EngineError` naming the offending ``param``); the
``completion``/``*_chunk`` builders produce exactly OpenAI's shapes. Unknown request fields are
ignored, as vLLM does, so a gateway can pass bodies through unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_engine.errors import bad_request

# Roles the engine accepts; "developer" is OpenAI's newer name for "system".
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """What a request that names no ``temperature`` or ``top_p`` gets. OpenAI's defaults (1 and
    1) unless the model recommends others: its generation config, or the bundled model's
    card (see `local_engine.models`). vLLM does the same with a model's generation config."""

    temperature: float = 1.0
    top_p: float = 1.0


OPENAI_SAMPLING = SamplingDefaults()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request, independent of the wire format."""

    model: str | None
    messages: tuple[dict[str, str], ...]  # {"role", "content"}, ready for the chat template
    max_tokens: int | None  # None: up to the context length
    temperature: float  # 0 means greedy
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    priority: int = 0
    """vLLM's request field: lower runs first (`local_engine.scheduling`)."""


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{key}' must be a number.", key)
    if not lo <= value <= hi:
        raise bad_request(f"'{key}' must be between {lo:g} and {hi:g}; got {value}.", key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{key}' must be an integer.", key)
    return value


def _content_text(content: Any, index: int) -> str:
    """Message content as text: a string, or a list of ``{"type": "text"}`` parts."""
    param = f"messages[{index}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"Only text content parts are supported; got '{kind}'.", param)
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request("A text content part needs a string 'text'.", param)
            texts.append(text)
        return "".join(texts)
    raise bad_request("Message content must be a string or a list of text parts.", param)


def _messages(raw: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list.", "messages", "empty_messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object.", f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}.",
                f"messages[{i}].role",
                "invalid_role",
            )
        role = "system" if role == "developer" else role
        messages.append({"role": role, "content": _content_text(message.get("content"), i)})
    return tuple(messages)


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them.", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise bad_request(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.", "stop")
    return tuple(dict.fromkeys(stops))


def parse_chat_request(body: Any, defaults: SamplingDefaults = OPENAI_SAMPLING) -> ChatRequest:
    """Validate an OpenAI chat completion body; raises a 400 `EngineError` on bad input."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string.", "model")
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise bad_request("Only n=1 is supported.", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request("logprobs are not supported by this engine.", "logprobs")
    if body.get("top_k") is not None:  # vLLM's extension, which Anthropic's API also has
        raise bad_request("top_k is not supported by this engine; use top_p.", "top_k")
    max_tokens = _integer(body, "max_completion_tokens")
    max_param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, max_param = _integer(body, "max_tokens"), "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"'{max_param}' must be at least 1.", max_param)
    seed = _integer(body, "seed")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", defaults.temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", defaults.top_p, 0.0, 1.0) or 1e-6,  # 0 keeps the top token
        stop=_stop(body.get("stop")),
        seed=seed,
        stream=stream,
        include_usage=bool(stream and options.get("include_usage")),
        priority=_integer(body, "priority") or 0,
    )


# ---------------------------------------------------------------------------------- responses


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """OpenAI's usage object; ``cached_tokens``: prompt tokens served from the prefix cache,
    which a gateway prices at its cached-input rate, as OpenAI's own prompt caching is."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        "system_fingerprint": None,
    }


@dataclass(frozen=True, slots=True)
class ChunkFactory:
    """Builds the ``chat.completion.chunk`` objects of one stream (same id, created, model)."""

    completion_id: str
    created: int
    model: str
    include_usage: bool

    @classmethod
    def new(cls, model: str, include_usage: bool) -> ChunkFactory:
        return cls(new_completion_id(), int(time.time()), model, include_usage)

    def _chunk(self, choices: Sequence[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": list(choices),
            "system_fingerprint": None,
        }
        if self.include_usage:
            chunk["usage"] = None  # OpenAI sends null on every chunk but the last
        return chunk

    def _choice(self, delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def role(self) -> dict[str, Any]:
        return self._chunk([self._choice({"role": "assistant", "content": ""}, None)])

    def content(self, text: str) -> dict[str, Any]:
        return self._chunk([self._choice({"content": text}, None)])

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk([self._choice({}, finish_reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage(prompt_tokens, completion_tokens, cached)
        return chunk
