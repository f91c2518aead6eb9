"""The Anthropic Messages door: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

A Messages request is translated into a Chat Completions object (`gateway.wire.anthropic`)
and runs through the same pipeline as every door (caches, routing, fallbacks, budgets,
ledger); the answer, a cache hit's replay included, goes back as a Message or as Anthropic's
SSE events (`gateway.wire.anthropic_output`). Errors take Anthropic's shape
(`gateway.api.errors`), after a stream has begun as an ``error`` event. ``anthropic-version``
and ``anthropic-beta`` are accepted and not acted on: a beta-gated body field the gateway
cannot express is refused by name.

``count_tokens`` calls no model and writes no ledger record: it costs nothing. It counts with
the named model's tokenizer (the policy's ``tokenizer``, or a ``local_engine`` model's own)
over the texts the model would be sent (system, messages, tool calls and results, and the
tools' JSON as a system text, which is how tool-aware chat templates present them); for
``auto``, the one model every rule sends to when there is just one; otherwise, or for a
model with no tokenizer, it estimates (UTF-8 bytes / 4).
``x-gateway-token-count`` says which.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from gateway.api.door import gateway_headers, pipeline_request, read_body, serve
from gateway.api.errors import anthropic_error
from gateway.api.sse import SSEResponse
from gateway.errors import GatewayError, ModelNotFound
from gateway.pipeline import normalize
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.ledger import estimate_tokens
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming
from gateway.policy.schema import Policy
from gateway.providers import AttemptFailed
from gateway.runtime.tokens import TokenCounter
from gateway.wire import anthropic, anthropic_output

log = logging.getLogger(__name__)


@post("/v1/messages", status_code=200)
async def messages(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return await serve(request, services, parse, _render)


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    runtime = services.policies.current
    request.state.request_id = normalize.new_request_id()  # for the error handler
    headers = request.headers
    tenant_of(runtime.tenants, headers.get("authorization"), headers.get("x-api-key"))
    raw = await read_body(request, runtime.policy.limits.max_body_bytes)
    chat = anthropic.chat_body(normalize.decode_object(raw), counting=True)
    model, models = chat["model"], runtime.policy.models
    chat_models = sorted(name for name, config in models.items() if config.kind == "chat")
    if model != "auto" and model not in chat_models:
        raise ModelNotFound(
            f"{model!r} is not a chat model of this gateway; use 'auto' or one of {chat_models}.",
            param="model",
        )
    texts = _prompt_texts(chat)
    counter = runtime.token_counters.get(_counted_as(model, runtime.policy))
    count, how = None, "estimate"
    if counter is not None:
        count = await asyncio.to_thread(_counted, counter, texts)
        how = "tokenizer" if count is not None else how
    if count is None:
        count = estimate_tokens(sum(len(m["content"].encode()) for m in texts))
    return Response(
        msgspec.json.encode({"input_tokens": count}),
        media_type="application/json",
        headers={"x-gateway-token-count": how},
    )


def _counted_as(model: str, policy: Policy) -> str:
    """The model whose tokenizer counts a request: the one named, or for ``auto`` the one model
    every rule of the policy sends to, when there is just one (else ``auto``: an estimate)."""
    if model != "auto":
        return model
    targets = {route.to for route in policy.routes}
    targets |= {route.split.to for route in policy.routes if route.split is not None}
    return targets.pop() if len(targets) == 1 else model


def parse(raw: bytes, arrival: Arrival, headers: Mapping[str, str]) -> ChatRequest:
    return pipeline_request(anthropic.chat_body(normalize.decode_object(raw)), arrival, headers)


def _render(result: Completed | Streaming) -> Response[bytes]:
    headers = gateway_headers(result)
    message_id = anthropic_output.message_id(result.request.request_id)
    stops = _stops(result.request.body)
    if isinstance(result, Completed):
        body = msgspec.json.encode(anthropic_output.message(result.body, message_id, stops))
        return Response(body, media_type="application/json", headers=headers)
    headers["cache-control"] = "no-cache"
    translator = anthropic_output.StreamTranslator(message_id, stops)
    return SSEResponse(_events(result.chunks, translator, result.request.request_id), headers)


async def _events(
    chunks: AsyncGenerator[bytes, None],
    translator: anthropic_output.StreamTranslator,
    request_id: str,
) -> AsyncGenerator[bytes, None]:
    """Each chat chunk's events as it arrives; a stream that breaks ends with an ``error``
    event. Closing this generator (the client went away) closes the upstream stream too."""
    try:
        async for chunk in chunks:
            out = translator.feed(chunk)
            if out:
                yield out
        yield translator.finish()
    except AttemptFailed as exc:
        log.warning("stream %s broke after it started: %s", request_id, exc.message)
        broken = GatewayError(f"The upstream stream broke: {exc.message}", status=502)
        yield anthropic_output.event("error", anthropic_error(broken)[1])
    finally:
        await chunks.aclose()


def _stops(body: Mapping[str, Any]) -> Sequence[str]:
    stop = body.get("stop")
    return stop if isinstance(stop, list) else []


def _prompt_texts(chat: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages as plain texts for a tokenizer: parts' text joined, tool calls as
    their JSON, and the tools' JSON as a system text first."""
    texts = []
    if chat.get("tools"):
        texts.append({"role": "system", "content": msgspec.json.encode(chat["tools"]).decode()})
    for message in chat["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        text = content or ""
        if message.get("tool_calls"):
            text += msgspec.json.encode(message["tool_calls"]).decode()
        texts.append({"role": message["role"], "content": text})
    return texts


def _counted(counter: TokenCounter, texts: list[dict[str, str]]) -> int | None:
    """The prompt's tokens through the model's chat template; None when the template refuses
    the conversation (a role it does not know, say), and the door estimates instead."""
    try:
        return counter.usage(texts, "").prompt_tokens
    except Exception as exc:  # jinja's TemplateError, mostly; the template is the model's
        log.info("count_tokens: the chat template refused the messages: %s", exc)
        return None
