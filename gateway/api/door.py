"""What every front door does around the pipeline, whatever its wire format.

A door is an adapter: its handler reads its wire format into the pipeline's `ChatRequest` (a
``parse`` function) and turns the pipeline's result back into its wire format (``render``).
`serve` does the rest, the same for every door: the request id and arrival time, the trace,
the tenant from the API key, the body within the policy's size limit, the request's bounds and
the rate limits (`gateway.pipeline.limits`), the pipeline run, and the ledger record of a
request that fails. The ``x-gateway-*`` headers are the same on every door (`gateway_headers`).
It also refuses the tag reserved for batch lines.

A client that goes away while its request runs (before a stream has begun) cancels the run,
and with it the upstream call; the ledger records a 499, as for a stream the client left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Request, Response

from gateway.errors import (
    BadRequest,
    ClientClosedRequest,
    GatewayError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.pipeline import ledger, limits
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.normalize import Arrival, ChatRequest, chat_request, new_request_id
from gateway.pipeline.run import run
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming, Turn
from gateway.policy.batch import BATCH_TAG

Parse = Callable[[bytes, Arrival, Mapping[str, str]], ChatRequest]
"""A door's reader: the body, who sent it and when, and the request's headers."""
Render = Callable[[Completed | Streaming], Response[bytes]]
Answer = Callable[[Turn], Awaitable[Completed | Streaming]]
"""What answers a turn: the pipeline (`gateway.pipeline.run.run`) for every door that asks a
model to generate."""


async def serve(
    request: Request[Any, Any, Any],
    services: Services,
    parse: Parse,
    render: Render,
    answer: Answer = run,
) -> Response[bytes]:
    """Run one request through the pipeline, read with ``parse`` and written with ``render``.

    It takes the services alone (the runtime is read from them once, here), since each
    dependency Litestar resolves costs the request a few microseconds.
    """
    at = (time.time(), time.monotonic())
    runtime = services.policies.current
    request_id = new_request_id()
    request.state.request_id = request_id  # for the error handler
    trace = services.telemetry.start_request(request.headers, request_id)
    with trace.activate():  # an error escaping it ends the request's span with its status
        headers = request.headers
        tenant = tenant_of(runtime.tenants, headers.get("authorization"), headers.get("x-api-key"))
        arrival = Arrival(request_id, tenant, at)
        admission = None
        turn: Turn | None = None
        try:
            raw = await read_body(request, runtime.policy.limits.max_body_bytes)
            chat = limits.shape(_live(parse(raw, arrival, request.headers)), runtime)
            trace.describe(chat)
            with Watch(request) as watch:
                try:
                    admission = await limits.admit(services, runtime, tenant)
                    turn = Turn(chat, runtime, services, trace)
                    result = await answer(turn)
                except asyncio.CancelledError:
                    if not watch.client_gone():
                        # The server stopped it (past the shutdown grace): it still leaves its
                        # record, its cost unknown, since a model may have been working on it.
                        stopped = GatewayError("The gateway stopped first.", status=503)
                        ledger.record_failure(services, trace, arrival, stopped, turn)
                        raise
                    raise ClientClosedRequest("The client closed the connection.") from None
        except GatewayError as exc:
            if admission is not None:
                await admission.release()
            ledger.record_failure(services, trace, arrival, exc, turn)
            raise
    if admission is None:
        return render(result)
    if isinstance(result, Streaming):
        response = render(limits.held_until_end(result, admission))
    else:
        await admission.release()
        response = render(result)
    response.headers.update(admission.headers)
    return response


def _live(chat: ChatRequest) -> ChatRequest:
    """A live request may not pass for a batch line (its routing and its ledger grouping)."""
    if BATCH_TAG in chat.tags:
        raise BadRequest(
            f"The x-gateway-tags key {BATCH_TAG!r} is reserved for lines of a batch.",
            param="x-gateway-tags",
        )
    return chat


class Watch:
    """Cancels the request's task when its client goes away, while the ``with`` block runs.

    The body has been read, so the next ASGI message can only be ``http.disconnect``. Waiting
    for it costs a task (10-15 µs of CPU on these machines), so the watch begins only once the
    request has run for `DELAY_S`: answers from a cache or a quick model are done by then, and
    a client that leaves a slow one is noticed 50 ms later at most.
    """

    DELAY_S = 0.05
    __slots__ = ("_gone", "_request", "_task", "_timer")

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self._request = request
        self._task = asyncio.current_task()
        self._gone: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Watch:
        self._timer = asyncio.get_running_loop().call_later(self.DELAY_S, self._begin)
        return self

    def __exit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._gone is not None:
            self._gone.remove_done_callback(self._cancel)
            self._gone.cancel()

    def client_gone(self) -> bool:
        """True when the client left (the task's cancellation is then taken back)."""
        if self._gone is None or not self._gone.done() or self._gone.cancelled():
            return False
        if self._task is not None:
            self._task.uncancel()
        return True

    def _begin(self) -> None:
        self._gone = asyncio.ensure_future(self._request.receive())
        self._gone.add_done_callback(self._cancel)

    def _cancel(self, gone: asyncio.Future[Any]) -> None:
        if self._task is not None and not gone.cancelled():
            self._task.cancel()


def pipeline_request(
    body: dict[str, Any], arrival: Arrival, headers: Mapping[str, str]
) -> ChatRequest:
    """The pipeline's request from a Chat Completions object (the client's, or one its door
    translated) and the headers every door reads the same way."""
    return chat_request(
        body,
        request_id=arrival.request_id,
        tenant=arrival.tenant,
        tags_header=headers.get("x-gateway-tags"),
        session_id=headers.get("x-session-id"),
        cache_control=headers.get("cache-control"),
        arrived=arrival.at,
    )


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The JSON body, refused as soon as it passes the policy's limit (before reading it all).

    Only ``application/json``: a browser sends other types cross-site without asking first
    (see :mod:`gateway.api.guard`), and no SDK sends anything else.
    """
    media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            "The body must be JSON, sent as 'Content-Type: application/json'.",
            param="content-type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def gateway_headers(result: Completed | Streaming) -> dict[str, str]:
    """The ``x-gateway-*`` response headers: which model answered, by which rule, at what cost."""
    out = {
        "x-gateway-cache": result.cache,
        "x-gateway-model": result.model,
        "x-gateway-route": result.route,
        "x-gateway-request-id": result.request.request_id,
    }
    # A live stream's cost is known only after its last chunk, when the headers are gone.
    if result.cost_usd is not None:
        out["x-gateway-cost-usd"] = format(result.cost_usd.normalize(), "f")
    if result.difficulty is not None:
        out["x-gateway-difficulty"] = f"{result.difficulty:.4f}"
    if result.cache_score is not None:
        out["x-gateway-cache-score"] = f"{result.cache_score:.4f}"
    return out
