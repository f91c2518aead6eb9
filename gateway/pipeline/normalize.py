"""Wire to value objects: the only place that reads the client's JSON.

The gateway checks the fields it acts on (``model``, ``messages``, ``stream``, ``tools``) and
those it reads anywhere later (the sampling parameters the caches key and bucket on, the
counts telemetry reports) with msgspec, so no later stage meets a value of the wrong type; it
forwards the client's object otherwise untouched, so fields it does not know (new OpenAI
parameters, vendor extensions) still reach the provider.

JSON nested deeper than `MAX_DEPTH` is refused: every later stage that walks the body (cache
keys, fingerprints, the provider's encoder) recurses, and Python's recursion limit would turn a
deep body into a crash anywhere along the way.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from gateway.errors import BadRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_DEPTH = 64
"""Nesting levels of arrays and objects a body may have (OpenAI allows 10 in a JSON schema)."""
_TOO_DEEP = f"The body is nested more than {MAX_DEPTH} levels deep."


class _Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _ChatBody(msgspec.Struct):
    """The fields the gateway reads; everything else passes through."""

    model: str
    messages: list[_Message]
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    # Read by the caches (key, cacheability, fingerprint buckets) and by telemetry.
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    logprobs: bool | None = None
    # The end user the request acts for: the caches' ``scope: user`` partitions by it.
    user: str | None = None
    safety_identifier: str | None = None


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The request's ``Cache-Control``: ``no-cache``, ``no-store``, ``max-age=N``."""

    read: bool = True
    write: bool = True
    max_age: float | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    request_id: str
    tenant: str
    model: str
    """``auto`` or the name of a model of the policy."""
    stream: bool
    wants_usage: bool
    """The client asked for a streamed usage chunk (``stream_options.include_usage``)."""
    body: Mapping[str, Any]
    """The client's JSON object, forwarded with ``model`` rewritten and, for a stream,
    ``stream_options.include_usage`` set, so that every stream can be costed."""
    tags: Mapping[str, str]
    has_tools: bool
    has_images: bool
    prompt_tokens: int
    """An estimate for routing rules: UTF-8 bytes of the messages' text / 4, rounded up."""
    session_id: str | None = None
    """The client's ``x-session-id``, naming the conversation."""
    end_user: str | None = None
    """The end user the client says the request is for: ``safety_identifier``, else ``user``
    (the Anthropic door maps ``metadata.user_id`` to ``user``); None when neither is set."""
    cache_control: CacheControl = CacheControl()
    arrived_unix: float = 0.0
    arrived_mono: float = 0.0
    """When the request arrived (``time.time()``, ``time.monotonic()``)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """Who sent a request and when, known before its body is read."""

    request_id: str
    tenant: str
    at: tuple[float, float]
    """``time.time()`` and ``time.monotonic()`` when it arrived."""


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def decode_object(raw: bytes) -> dict[str, Any]:
    """A client's body as a JSON object no deeper than `MAX_DEPTH`; every door reads its body
    with this before its own checks."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    deep = _too_deep(body)
    if deep is not None:
        raise BadRequest(_TOO_DEEP, param=deep)
    return body


def chat_request(
    body: bytes | dict[str, Any],
    *,
    request_id: str,
    tenant: str,
    tags_header: str | None,
    session_id: str | None = None,
    cache_control: str | None = None,
    arrived: tuple[float, float] = (0.0, 0.0),
) -> ChatRequest:
    """Check a Chat Completions body (the client's bytes, or the object a door translated its
    wire format into: it becomes the request's body, so it is not the caller's any more);
    raises `BadRequest` saying what is wrong."""
    if isinstance(body, bytes):
        body = decode_object(body)
    try:
        checked = msgspec.convert(body, _ChatBody)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc), param=_param_of(str(exc))) from exc
    if not checked.messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(checked.messages):
        if message.role not in _ROLES:
            raise BadRequest(
                f"Invalid role {message.role!r}; expected one of {sorted(_ROLES)}.",
                param=f"messages[{i}].role",
            )
    stream = bool(checked.stream)
    wants_usage = bool((checked.stream_options or {}).get("include_usage"))
    if stream and not wants_usage:
        body["stream_options"] = {**(checked.stream_options or {}), "include_usage": True}
    return ChatRequest(
        request_id=request_id,
        tenant=tenant,
        model=checked.model,
        stream=stream,
        wants_usage=wants_usage,
        body=MappingProxyType(body),
        tags=MappingProxyType(parse_tags(tags_header)),
        has_tools=bool(checked.tools),
        has_images=any(_has_image(m) for m in checked.messages),
        prompt_tokens=-(-sum(_text_bytes(m) for m in checked.messages) // 4),
        session_id=session_id or None,
        end_user=checked.safety_identifier or checked.user or None,
        cache_control=parse_cache_control(cache_control),
        arrived_unix=arrived[0],
        arrived_mono=arrived[1],
    )


MAX_EMBEDDING_INPUTS = 2048
"""Inputs one embeddings request may hold (OpenAI's limit)."""
EmbeddingInput = str | list[int]
"""A text, or a text's token ids."""


class _EmbeddingsBody(msgspec.Struct):
    """The fields of an Embeddings request the gateway reads; the rest passes through."""

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


def embeddings_request_of(
    body: dict[str, Any],
    *,
    request_id: str,
    tenant: str,
    tags_header: str | None,
    cache_control: str | None = None,
    arrived: tuple[float, float] = (0.0, 0.0),
) -> ChatRequest:
    """Check a decoded Embeddings object; its ``input`` becomes a list (of texts, or of token-id
    arrays), so later stages and the provider see one shape. Raises `BadRequest`."""
    try:
        checked = msgspec.convert(body, _EmbeddingsBody)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc), param=_param_of(str(exc))) from exc
    if checked.dimensions is not None and checked.dimensions < 1:
        raise BadRequest("'dimensions' must be at least 1.", param="dimensions")
    inputs = _embedding_inputs(checked.input)
    body["input"] = inputs
    text_bytes = sum(len(i.encode()) if isinstance(i, str) else 4 * len(i) for i in inputs)
    return ChatRequest(
        request_id=request_id,
        tenant=tenant,
        model=checked.model,
        stream=False,
        wants_usage=False,
        body=MappingProxyType(body),
        tags=MappingProxyType(parse_tags(tags_header)),
        has_tools=False,
        has_images=False,
        prompt_tokens=-(-text_bytes // 4),
        cache_control=parse_cache_control(cache_control),
        arrived_unix=arrived[0],
        arrived_mono=arrived[1],
    )


def _embedding_inputs(value: Any) -> list[EmbeddingInput]:
    """``input`` as a list: a text, a list of texts, a token-id array or a list of them; none
    empty, at most `MAX_EMBEDDING_INPUTS` (OpenAI refuses the same)."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(map(_token_id, value))):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "'input' must be a non-empty string, array of strings, array of token ids, or "
            "array of token-id arrays.",
            param="input",
        )
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise BadRequest(
            f"'input' holds {len(value)} items; the most is {MAX_EMBEDDING_INPUTS}.",
            param="input",
        )
    for i, item in enumerate(value):
        text = isinstance(item, str)
        if not (text or isinstance(item, list)) or (not text and not all(map(_token_id, item))):
            raise BadRequest(
                "Each input must be a string or an array of token ids.", param=f"input[{i}]"
            )
        if not item:
            raise BadRequest("An input must not be empty.", param=f"input[{i}]")
    return value


def _token_id(value: Any) -> bool:
    """A vocabulary index: no tokenizer has more than 2**32 pieces, and a larger integer would
    not even encode for the provider."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def parse_tags(header: str | None) -> dict[str, str]:
    """``x-gateway-tags: k=v,k2=v2`` as a mapping."""
    tags: dict[str, str] = {}
    for item in (header or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadRequest(
                f"Malformed x-gateway-tags item {item.strip()!r}; expected k=v.",
                param="x-gateway-tags",
            )
        tags[key.strip()] = value.strip()
    return tags


def parse_cache_control(header: str | None) -> CacheControl:
    read, write, max_age = True, True, None
    for directive in (header or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            read = False
        elif name == "no-store":
            write = False
        elif name == "max-age":
            # ASCII digits only: str.isdigit() also takes "²", which float() refuses.
            if not (value.strip().isascii() and value.strip().isdigit()):
                raise BadRequest(
                    f"Malformed Cache-Control max-age {value!r}; expected seconds.",
                    param="cache-control",
                )
            max_age = float(value)
    return CacheControl(read, write, max_age)


def _too_deep(body: dict[str, Any]) -> str | None:
    """The top-level field whose arrays and objects nest past `MAX_DEPTH` levels (the body
    itself being the first), or None. An explicit stack, since recursing is what a deep body
    breaks."""
    for field, value in body.items():
        if not isinstance(value, dict | list):
            continue
        stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 2)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                return field
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
    return None


def _has_image(message: _Message) -> bool:
    return isinstance(message.content, list) and any(
        part.get("type") == "image_url" for part in message.content
    )


def _text_bytes(message: _Message) -> int:
    if isinstance(message.content, str):
        return len(message.content.encode())
    if isinstance(message.content, list):
        return sum(len(str(p.get("text", "")).encode()) for p in message.content)
    return 0


def _param_of(message: str) -> str | None:
    """msgspec says ``... - at `$.messages[0].role``` or ``missing required field `x```."""
    if "`$." in message:
        return message.rsplit("`$.", 1)[1].rstrip("`")
    if "required field `" in message:
        return message.rsplit("required field `", 1)[1].rstrip("`")
    return None
