"""The OpenAI Batch API: ``POST /v1/batches``, ``GET /v1/batches`` (paged),
``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``.

Creating a batch stores it ``validating`` and nudges this replica's runner
(`gateway.batch.runner`), which checks the file, runs the lines through the endpoint's door
(`DOORS`: the same reader and pipeline as a live request) and writes the output and error
files. While it runs, ``request_counts`` are read from the lines' results as they come.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.api import chat, embeddings, responses
from gateway.api.door import read_body
from gateway.api.files import json_response, not_found, owner, page
from gateway.batch.line import Answer, Door, Parse
from gateway.batch.service import Batches
from gateway.batch.wire import ENDPOINTS, UNFINISHED, batch_object, new_id
from gateway.errors import BadRequest
from gateway.pipeline.run import run
from gateway.pipeline.services import Services

DOORS: dict[str, Door] = {
    "/v1/chat/completions": lambda _: (chat.parse, run),
    "/v1/embeddings": lambda _: (embeddings.parse, embeddings.answer),
    "/v1/responses": lambda services: _responses(responses.Exchange(services)),
}
"""Each endpoint's reader and answerer: its door's own, so that a line is read and answered
exactly as a live request to the endpoint is."""
CANCELLABLE = frozenset({"validating", "in_progress"})
MAX_METADATA = 16


def _responses(exchange: responses.Exchange) -> tuple[Parse, Answer]:
    """A Responses exchange keeps the request between reading and answering: one per line."""
    return exchange.parse, exchange.answer


class _Create(msgspec.Struct):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


@post("/v1/batches", status_code=200)
async def create_batch(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    raw = await read_body(request, services.policies.current.policy.limits.max_body_bytes)
    try:
        asked = msgspec.json.decode(raw, type=_Create)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The body is not a valid batch: {exc}") from exc
    if asked.endpoint not in ENDPOINTS:
        raise BadRequest(
            f"'endpoint' must be one of {list(ENDPOINTS)}, not {asked.endpoint!r}.",
            param="endpoint",
        )
    if asked.completion_window != "24h":
        raise BadRequest("'completion_window' must be '24h'.", param="completion_window")
    if asked.metadata is not None and len(asked.metadata) > MAX_METADATA:
        raise BadRequest(f"'metadata' takes at most {MAX_METADATA} keys.", param="metadata")
    source = await batches.store.get("file", tenant, asked.input_file_id)
    if source is None or source["purpose"] != "batch":
        raise BadRequest(
            f"No batch input file {asked.input_file_id!r} (upload it with purpose 'batch').",
            param="input_file_id",
        )
    batch = batch_object(new_id("batch_"), asked.input_file_id, asked.endpoint, 0, asked.metadata)
    await batches.store.put("batch", tenant, batch)
    batches.nudge.set()
    return json_response(batch)


@get("/v1/batches")
async def list_batches(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    found = await batches.store.listing("batch", tenant)
    listed = page(found, request.query_params, default_limit=20)
    listed["data"] = [await _counted(batches, b) for b in listed["data"]]
    return json_response(listed)


@get("/v1/batches/{batch_id:str}")
async def retrieve_batch(
    request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: FromPath[str]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    found = await batches.store.get("batch", tenant, batch_id)
    if found is None:
        raise not_found("batch", batch_id)
    return json_response(await _counted(batches, found))


@post("/v1/batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(
    request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: FromPath[str]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    changes = {"status": "cancelling", "cancelling_at": int(time.time())}
    moved = await batches.store.update(tenant, batch_id, CANCELLABLE, changes)
    if moved is not None:
        batches.nudge.set()
        return json_response(await _counted(batches, moved))
    found = await batches.store.get("batch", tenant, batch_id)
    if found is None:
        raise not_found("batch", batch_id)
    if found["status"] == "cancelling":
        return json_response(await _counted(batches, found))
    raise BadRequest(
        f"Cannot cancel a batch with status {found['status']!r}.",
        code="batch_not_cancellable",
        status=409,
    )


async def _counted(batches: Batches, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its lines' results counted so far, while it runs."""
    if batch["status"] in UNFINISHED and batch["status"] != "validating":
        completed, failed = await batches.store.counts(batch["id"])
        batch["request_counts"] = {**batch["request_counts"], "completed": completed}
        batch["request_counts"]["failed"] = failed
    return batch


ROUTES = [create_batch, list_batches, retrieve_batch, cancel_batch]
