"""What every front door does around the pipeline, whatever its wire format.

A door is an adapter: its handler reads its wire format into the pipeline's `ChatRequest` (a
``parse`` function) and turns the pipeline's result back into its wire format (``render``).
`serve` does the rest, the same for every door: the request id and arrival time, the trace,
the tenant from the API key, the body within the policy's size limit, the pipeline run, and
the ledger record of a request that fails. The ``x-gateway-*`` headers are the same on every
door (`gateway_headers`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from litestar import Request, Response

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.pipeline import ledger
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.normalize import Arrival, ChatRequest, new_request_id
from gateway.pipeline.run import run
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming, Turn

Parse = Callable[[bytes, Arrival, Mapping[str, str]], ChatRequest]
"""A door's reader: the body, who sent it and when, and the request's headers."""
Render = Callable[[Completed | Streaming], Response[bytes]]


async def serve(
    request: Request[Any, Any, Any], services: Services, parse: Parse, render: Render
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
        tenant = tenant_of(runtime.tenants, request.headers.get("authorization"))
        arrival = Arrival(request_id, tenant, at)
        try:
            raw = await read_body(request, runtime.policy.limits.max_body_bytes)
            chat = parse(raw, arrival, request.headers)
            trace.describe(chat)
            result = await run(Turn(chat, runtime, services, trace))
        except GatewayError as exc:
            ledger.record_failure(services, trace, arrival, exc)
            raise
    return render(result)


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body, refused as soon as it passes the policy's limit (before reading it all)."""
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
