"""Anthropic's Messages API as an upstream: a chat request as a Messages body, and the answer
(whole or streamed) back as ``chat.completion`` and ``chat.completion.chunk`` objects.

The other direction of `gateway.wire.anthropic` (a Messages front door); the two share the
vocabularies of `gateway.wire.anthropic_output` (``stop_reason`` to ``finish_reason``, the
usage shapes) and the tool-id rule of `gateway.wire.anthropic.tool_id`.

Request: system and developer messages become ``system`` (in order, wherever they stood);
``tool`` messages become ``tool_result`` blocks of a user turn (consecutive turns of one role
are merged, so parallel results share a turn and a user's text follows them); an assistant's
``tool_calls`` become ``tool_use`` blocks; ``image_url`` parts become base64 or url image
sources; ``stop`` becomes ``stop_sequences``; ``user`` becomes ``metadata.user_id``.
``max_tokens`` is required there: the request's ``max_completion_tokens`` or ``max_tokens``,
else `DEFAULT_MAX_TOKENS` (the policy's ``max_tokens.default`` is applied before this).
What changes the answer and cannot be asked of Messages (``n`` > 1, ``logprobs``, a JSON
``response_format``, audio) is refused with `Unsupported`; what only tunes or labels
(``seed``, penalties, ``stream_options``, ``store``, ``metadata``, ``service_tier``,
``prompt_cache_key``) is dropped. A ``cache_control`` on a content part or a tool is kept on
its block: Anthropic caches only up to such marks.

Answers: text blocks join into ``content``, ``tool_use`` blocks become ``tool_calls`` (the
arguments as JSON text), ``thinking`` becomes ``reasoning_content`` (vLLM's field); usage is
OpenAI's shape: ``prompt_tokens`` = input + cache writes + cache reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from gateway.wire.anthropic import tool_id
from gateway.wire.anthropic_output import chat_usage, finish_reason

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` when neither the request nor the policy sets one (Messages requires it)."""


class Unsupported(ValueError):
    """A chat request field Messages cannot honour; the message names the field."""


class UpstreamError(Exception):
    """An ``error`` event inside a Messages stream (``overloaded_error``, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""The HTTP status Anthropic gives each error type (an ``error`` event mid-stream carries only
the type): what retry and fallback decide on."""

# ------------------------------------------------------------------------------ the request

_DROPPED = frozenset(
    {
        "model",
        "stream_options",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "parallel_tool_calls",
        "n",
        "logprobs",
        "response_format",
        "modalities",
    }
)
"""Read below (``n``, ``logprobs``...) or only tuning and labels: never copied as they are."""
_COPIED = ("temperature", "top_p", "top_k", "stream")


def messages_body(chat: dict[str, Any]) -> dict[str, Any]:
    """The Messages body for a chat body, without ``model`` (the provider names its own; Vertex
    wants none)."""
    _refuse_what_changes_the_answer(chat)
    known = {"messages", "tools", "tool_choice", "stop", "user", "max_tokens"}
    known |= {"max_completion_tokens", *_COPIED, *_DROPPED}
    if unknown := sorted(set(chat) - known):
        raise Unsupported(f"'{unknown[0]}' cannot be sent to an Anthropic model")
    system, messages = _conversation(chat["messages"])
    body: dict[str, Any] = {
        "max_tokens": chat.get("max_completion_tokens")
        or chat.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    body |= {k: chat[k] for k in _COPIED if chat.get(k) is not None}
    if stop := chat.get("stop"):
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("user"):
        body["metadata"] = {"user_id": chat["user"]}
    if tools := chat.get("tools"):
        body["tools"] = [_tool(t) for t in tools]
    if (choice := _tool_choice(chat)) is not None:
        body["tool_choice"] = choice
    return body


def _refuse_what_changes_the_answer(chat: dict[str, Any]) -> None:
    if (chat.get("n") or 1) > 1:
        raise Unsupported("'n' above 1: an Anthropic model gives one answer per request")
    if chat.get("logprobs") or chat.get("top_logprobs"):
        raise Unsupported("'logprobs': an Anthropic model reports none")
    kind = (chat.get("response_format") or {}).get("type", "text")
    if kind != "text":
        raise Unsupported(f"'response_format' {kind}: not offered by the Messages API")
    if "audio" in (chat.get("modalities") or ()) or chat.get("audio"):
        raise Unsupported("'audio': an Anthropic model answers in text")


def _conversation(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """``system`` blocks and the turns, consecutive turns of one role merged."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system += _blocks(message.get("content"), f"messages[{i}]")
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "assistant":
            blocks = _assistant(message, i)
        elif role == "user":
            blocks = _blocks(message.get("content"), f"messages[{i}]")
        else:
            raise Unsupported(f"'messages[{i}].role' {role!r} has no Messages equivalent")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(content: Any, path: str) -> list[dict[str, Any]]:
    """Text and image blocks for a message's content; blank text is left out (Messages
    rejects empty text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not part["text"].strip():
                continue
            block = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            block = {"type": "image", "source": _image_source(part["image_url"]["url"])}
        else:
            raise Unsupported(f"'{path}.content[{j}]' of type {kind!r}: not offered by Messages")
        blocks.append(_cache_point(block, part))
    return blocks


def _cache_point(block: dict[str, Any], marked: dict[str, Any]) -> dict[str, Any]:
    """``block`` with the ``cache_control`` a chat part or tool carries (Anthropic's, as
    LiteLLM and Bedrock's translation take it): without one, Anthropic caches nothing."""
    if marked.get("cache_control"):
        block["cache_control"] = marked["cache_control"]
    return block


def _image_source(url: str) -> dict[str, str]:
    """A ``data:`` URL as a base64 source, any other as a url source."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    text = content if isinstance(content, str) else _text_of(content or [])
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(message["tool_call_id"])}
    if text.strip():
        block["content"] = text
    return block


def _text_of(parts: Iterable[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def _assistant(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), f"messages[{i}]")
    for call in message.get("tool_calls") or ():
        function = call["function"]
        try:
            arguments = msgspec.json.decode(function.get("arguments") or "{}")
        except msgspec.DecodeError as exc:
            raise Unsupported(f"'messages[{i}].tool_calls' arguments are not JSON") from exc
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id(call["id"]),
                "name": function["name"],
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    return blocks


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    schema = {"type": "object", **(function.get("parameters") or {})}
    found: dict[str, Any] = {"name": function["name"], "input_schema": schema}
    if function.get("description"):
        found["description"] = function["description"]
    return _cache_point(found, tool)


def _tool_choice(chat: dict[str, Any]) -> dict[str, Any] | None:
    choice = chat.get("tool_choice")
    if choice is None and chat.get("parallel_tool_calls") is not False:
        return None
    if isinstance(choice, dict):
        found: dict[str, Any] = {"type": "tool", "name": choice["function"]["name"]}
    else:
        found = {"type": {"required": "any", "none": "none"}.get(choice or "auto", "auto")}
    if chat.get("parallel_tool_calls") is False and found["type"] != "none":
        found["disable_parallel_tool_use"] = True
    return found


# ------------------------------------------------------------------------------- the answer


def completion(message: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` for a Messages response."""
    text, reasoning, calls = [], [], []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block["text"])
        elif kind == "thinking":
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
    said: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if reasoning:
        said["reasoning_content"] = "".join(reasoning)
    if calls:
        said["tool_calls"] = calls
    choice = {"index": 0, "message": said, "finish_reason": finish_reason(message["stop_reason"])}
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [choice],
        "usage": chat_usage(message.get("usage") or {}),
    }


class ChunkTranslator:
    """Messages stream events (their ``data`` objects) to ``chat.completion.chunk`` objects.

    Tool calls are numbered by their order among tool blocks (``index`` 0, 1, ...), found by
    the event's block ``index``; ``input_json_delta`` pieces become argument deltas of that
    call. ``message_delta`` gives the finish reason; ``message_stop`` the usage chunk (empty
    ``choices``, as OpenAI sends it) and `done`. ``ping`` and unknown events are skipped; an
    ``error`` event raises `UpstreamError`.
    """

    def __init__(self) -> None:
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._calls: dict[int, int] = {}
        """Block index -> tool call index."""
        self.done = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one event (often one, sometimes none)."""
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        if kind == "content_block_start":
            return self._block(event["index"], event["content_block"])
        if kind == "message_start":
            message = event["message"]
            self._id, self._model = message.get("id", ""), message.get("model", "")
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self._usage |= {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            return [self._chunk({}, finish_reason(event["delta"].get("stop_reason")))]
        if kind == "message_stop":
            self.done = True
            return [{**self._chunk({}), "choices": [], "usage": chat_usage(self._usage)}]
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamError(str(error.get("type", "error")), str(error.get("message", "")))
        return []

    def _block(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use":
            self._calls[index] = len(self._calls)
            function = {"name": block["name"], "arguments": ""}
            call = {"index": self._calls[index], "id": block["id"], "type": "function"}
            return [self._chunk({"tool_calls": [{**call, "function": function}]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and index in self._calls:
            call = {"index": self._calls[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        return []

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
