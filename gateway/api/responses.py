"""The OpenAI Responses door: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

A request is translated into a chat body (`gateway.wire.responses`) and answered by the
pipeline like any other; the answer comes back as a Response object, or streamed as the
Responses events (`gateway.wire.responses_output`). The door adds what the API keeps between
requests: with ``store`` (the default) the Response and its conversation are kept under the
tenant for the policy's ``responses.ttl`` (`gateway.responses_store`), so that
``previous_response_id`` continues it and ``GET``/``DELETE`` read and remove it. Another
tenant's id is not found, as if it did not exist.

A response is stored before the stream's terminal event is sent, so a client may chain the
next turn the moment it sees ``response.completed``; a failed or abandoned stream is not
stored. ``store: false`` is honoured as sent (nothing kept).

A ``GET /v1/responses`` asking for a WebSocket (Codex's transport) gets a 426 at once, so the
client falls back to HTTP instead of retrying.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from typing import Any

import msgspec
from litestar import Request, Response, WebSocket, delete, get, post, websocket
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from gateway.api.door import gateway_headers, pipeline_request, serve
from gateway.api.sse import SSEResponse
from gateway.errors import BadRequest, GatewayError, UpstreamUnavailable
from gateway.pipeline import limits, normalize
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.run import run
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming, Turn, batches
from gateway.providers import AttemptFailed
from gateway.responses_store import StoreUnavailable
from gateway.wire.responses import ResponsesRequest, chat_body, input_messages, read_request
from gateway.wire.responses_output import Output, frame, new_response_id


class _Stored(msgspec.Struct):
    """What the store keeps of a response: the Response object and the conversation so far
    (this response's output included, its instructions not)."""

    response: dict[str, Any]
    messages: list[dict[str, Any]]


@post("/v1/responses", status_code=200)
async def create_response(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    exchange = Exchange(services)
    return await serve(request, services, exchange.parse, _render, exchange.answer)


@get("/v1/responses/{response_id:str}")
async def retrieve_response(
    request: Request[Any, Any, Any], services: NamedDependency[Services], response_id: FromPath[str]
) -> Response[bytes]:
    if request.query_params.get("stream") in ("true", "1"):
        raise BadRequest("A stored response cannot be streamed again.", param="stream")
    stored = await _load(services, _tenant(request, services), response_id, param=None)
    return Response(msgspec.json.encode(stored.response), media_type="application/json")


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    request: Request[Any, Any, Any], services: NamedDependency[Services], response_id: FromPath[str]
) -> Response[bytes]:
    try:
        deleted = await services.responses.delete(_tenant(request, services), response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc
    if not deleted:
        raise _not_found(response_id, None)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(msgspec.json.encode(body), media_type="application/json")


_NO_WEBSOCKET = GatewayError(
    "The Responses API is served over HTTP here (POST /v1/responses); WebSocket upgrades are "
    "not supported.",
    code="websocket_not_supported",
    status=426,
)


@get("/v1/responses", status_code=426)
async def responses_upgrade(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Codex tries a WebSocket first: a quick 426 sends it to HTTP (a 404 or 405 costs it
    retries). This is the answer where the server reads the upgrade as plain HTTP."""
    return Response(_NO_WEBSOCKET.encode(), media_type="application/json", status_code=426)


@websocket("/v1/responses")
async def responses_websocket(socket: WebSocket[Any, Any, Any]) -> None:
    """The same 426 where the server hands the upgrade over as a WebSocket: refused before the
    handshake with the ASGI denial response, or closed where the server has none."""
    await socket.receive()  # websocket.connect
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(code=1008, reason="use HTTP: POST /v1/responses")
        return
    start: WebSocketResponseStartEvent = {
        "type": "websocket.http.response.start",
        "status": 426,
        "headers": [(b"content-type", b"application/json")],
    }
    body: WebSocketResponseBodyEvent = {
        "type": "websocket.http.response.body",
        "body": _NO_WEBSOCKET.encode(),
        "more_body": False,
    }
    await socket.send(start)
    await socket.send(body)


ROUTES = [
    create_response,
    retrieve_response,
    delete_response,
    responses_upgrade,
    responses_websocket,
]


def _tenant(request: Request[Any, Any, Any], services: Services) -> str:
    headers = request.headers
    ring = services.policies.current.tenants
    return tenant_of(ring, headers.get("authorization"), headers.get("x-api-key"))


async def _load(services: Services, tenant: str, response_id: str, param: str | None) -> _Stored:
    """A stored response of this tenant; 404 when it has none by that id (another tenant's
    included), 400 for a ``previous_response_id`` (``param``) that names none."""
    try:
        raw = await services.responses.get(tenant, response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc
    if raw is None:
        raise _not_found(response_id, param)
    return msgspec.json.decode(raw, type=_Stored)


def _not_found(response_id: str, param: str | None) -> BadRequest:
    if param is not None:
        return BadRequest(
            f"Previous response with id {response_id!r} not found (never stored, deleted, "
            "or expired).",
            param=param,
            code="previous_response_not_found",
        )
    message = f"Response with id {response_id!r} not found."
    return BadRequest(message, code="response_not_found", status=404)


def _unavailable(exc: StoreUnavailable) -> GatewayError:
    return GatewayError(
        f"Stored responses are unavailable: {exc}", code="responses_store_unavailable", status=503
    )


def _render(result: Completed | Streaming) -> Response[bytes]:
    """The Response object, or its events (already SSE frames, from `_events`)."""
    headers = gateway_headers(result)
    if isinstance(result, Completed):
        return Response(result.body, media_type="application/json", headers=headers)
    headers["cache-control"] = "no-cache"
    return SSEResponse(result.chunks, headers)


class Exchange:
    """One ``POST /v1/responses``: `parse` reads the request, `answer` loads the conversation
    it continues, runs the pipeline and writes the Response (stored before it is sent)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.request: ResponsesRequest | None = None
        self.arrival: Arrival | None = None
        self.headers: Mapping[str, str] = {}

    def parse(self, raw: bytes, arrival: Arrival, headers: Mapping[str, str]) -> ChatRequest:
        self.request = read_request(normalize.decode_object(raw))
        self.arrival, self.headers = arrival, headers
        return pipeline_request(chat_body(self.request, []), arrival, headers)

    async def answer(self, turn: Turn) -> Completed | Streaming:
        request, arrival = self.request, self.arrival
        assert request is not None and arrival is not None  # parse ran first
        history: list[dict[str, Any]] = []
        if request.previous_response_id is not None:
            prior = await _load(
                self.services, arrival.tenant, request.previous_response_id, "previous_response_id"
            )
            history = prior.messages
            chat = pipeline_request(chat_body(request, history), arrival, self.headers)
            turn.request = limits.shape(chat, turn.runtime)
        keep = _Keeper(self.services, turn, request, [*history, *request.messages])
        response_frame = frame(request, new_response_id(), int(arrival.at[0]))
        output = Output(response_frame, events=request.stream)
        result = await run(turn)
        if isinstance(result, Streaming):
            return replace(result, chunks=_events(result.chunks, output, keep))
        output.completion(_decoded(result.body))
        response = output.finish()
        await keep(response)
        return replace(result, body=msgspec.json.encode(response))


class _Keeper:
    """Stores a finished Response with its conversation, when the request asked to."""

    def __init__(
        self,
        services: Services,
        turn: Turn,
        request: ResponsesRequest,
        conversation: list[dict[str, Any]],
    ) -> None:
        self.services, self.turn, self.request = services, turn, request
        self.conversation = conversation
        """The messages before the answer: the earlier turns' and this input."""

    async def __call__(self, response: dict[str, Any]) -> None:
        if not self.request.store:
            return
        messages = [*self.conversation, *input_messages(response["output"])]
        value = msgspec.json.encode(_Stored(response, messages))
        ttl = self.turn.runtime.policy.responses.ttl
        try:
            await self.services.responses.put(self.turn.request.tenant, response["id"], value, ttl)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc


async def _events(
    chunks: AsyncGenerator[bytes, None], output: Output, keep: _Keeper
) -> AsyncGenerator[bytes, None]:
    """The chat chunks as Responses events, those of chunks that arrived together in one
    piece (one write to the client); the Response is stored before its terminal event, and a
    stream that breaks ends with ``response.failed``, its one terminal event.

    Closing this generator (the client went away) closes the pipeline's chunks too.
    """
    arrived = batches(chunks)
    try:
        try:
            async for batch in arrived:
                for chunk in batch:
                    decoded = _chunk(chunk)
                    if decoded is not None:
                        output.chunk(decoded)
                events = output.take()
                if events:
                    yield b"".join(events)
            await keep(output.finish())
            output.end()
        except AttemptFailed as exc:
            output.fail(f"The upstream stream broke: {exc.message}")
        except GatewayError as exc:
            output.fail(exc.message)
        yield b"".join(output.take())
    finally:
        await arrived.aclose()
        await chunks.aclose()  # in case ``arrived`` never started


def _chunk(raw: bytes) -> dict[str, Any] | None:
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _decoded(body: bytes) -> dict[str, Any]:
    decoded = _chunk(body)
    if decoded is None:
        raise UpstreamUnavailable(
            502, "The model's answer is not a chat completion.", "upstream_error", []
        )
    return decoded
