"""OpenAI's legacy Completions API (``POST /v1/completions``) on the Chat Completions pipeline.

A prompt becomes one user message; the chat answer's ``choices[].message.content`` comes back
as ``choices[].text`` of a ``text_completion`` (chunks of a stream likewise, one
``text_completion`` object each, as OpenAI streams them). The sampling fields both APIs share
(``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``presence_penalty``,
``frequency_penalty``, ``logit_bias``, ``user``, ``stream_options``) pass through under the same
names, as do fields the gateway does not know.

``max_tokens`` defaults to 16 when the client sends none: the legacy API's own default, which
the SDKs rely on (a chat model's default is its whole context).

Refused with a 400 naming the field, because the chat pipeline cannot express them: ``suffix``
(insertion), ``echo: true``, ``logprobs`` (the legacy API's per-token log-probabilities),
``best_of`` above 1, a prompt of token ids, and a list of several prompts (one request is one
conversation; a list would need several pipeline runs, each its own ledger record and headers,
for an API clients have long left). Chat-only fields that would make the answer something other
than text (``messages``, ``tools``, ``functions``...) are refused too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import BadRequest, UpstreamUnavailable

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for the legacy API."""
_CHAT_ONLY = (
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "modalities",
    "audio",
)
"""Chat fields a Completions body cannot carry: they would make the answer other than text."""


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions object for a Completions body; raises `BadRequest` naming a field
    the chat pipeline cannot express."""
    _refuse_inexpressible(body)
    chat = {k: v for k, v in body.items() if k not in ("prompt", "echo", "best_of", "suffix")}
    chat["messages"] = [{"role": "user", "content": _prompt(body)}]
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        chat["max_tokens"] = DEFAULT_MAX_TOKENS
    return chat


def _refuse_inexpressible(body: dict[str, Any]) -> None:
    for name in _CHAT_ONLY:
        if name in body:
            raise BadRequest(f"{name!r} is a Chat Completions field.", param=name)
    if body.get("suffix") not in (None, ""):
        raise BadRequest("'suffix' (insertion) is not supported.", param="suffix")
    if body.get("echo") not in (None, False):
        raise BadRequest("'echo' is not supported; send false or leave it out.", param="echo")
    if body.get("logprobs") is not None:
        raise BadRequest("'logprobs' is not supported on /v1/completions.", param="logprobs")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise BadRequest("'best_of' above 1 is not supported.", param="best_of")


def _prompt(body: dict[str, Any]) -> str:
    """The one text prompt (a list holding one string counts as one)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        raise BadRequest("'prompt' is required.", param="prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise BadRequest(
            "A list of several prompts is not supported; send one request per prompt.",
            param="prompt",
        )
    raise BadRequest("'prompt' must be a string (token ids are not supported).", param="prompt")


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Chat(msgspec.Struct):
    """A ``chat.completion`` or a ``chat.completion.chunk``: what the legacy shape keeps."""

    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_Choice] = []
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None
    error: Any = None
    """An error event some servers send inside a stream."""


def completion(chat: bytes) -> bytes:
    """A ``text_completion`` from a ``chat.completion``."""
    try:
        decoded = msgspec.json.decode(chat, type=_Chat)
    except msgspec.MsgspecError as exc:
        raise UpstreamUnavailable(
            502, f"The model's answer is not a chat completion: {exc}", "upstream_error", []
        ) from exc
    return msgspec.json.encode(_text_completion(decoded, "message"))


def chunk(chat_chunk: bytes) -> bytes | None:
    """A streamed ``text_completion`` from a ``chat.completion.chunk``; None for a chunk that
    carries nothing the legacy stream has (the opening role-only delta). A payload that is no
    chunk (an error event) passes unchanged."""
    try:
        chat = msgspec.json.decode(chat_chunk, type=_Chat)
    except msgspec.MsgspecError:
        return chat_chunk
    if chat.error is not None:
        return chat_chunk
    out = _text_completion(chat, "delta")
    out["choices"] = [c for c in out["choices"] if c["text"] or c["finish_reason"]]
    if not out["choices"] and chat.usage is None:
        return None
    return msgspec.json.encode(out)


def _text_completion(chat: _Chat, part: str) -> dict[str, Any]:
    choices = []
    for choice in chat.choices:
        message = (choice.message if part == "message" else choice.delta) or _Message()
        choices.append(
            {
                "text": message.content or "",
                "index": choice.index,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": "cmpl-" + chat.id.removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.created,
        "model": chat.model,
        "system_fingerprint": chat.system_fingerprint,
        "choices": choices,
    }
    if chat.usage is not None or part == "message":
        out["usage"] = chat.usage
    return out
