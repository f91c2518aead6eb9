"""The OpenAI Files API, for batches: ``POST /v1/files`` (purpose ``batch``, JSONL, multipart
as the SDKs send it, at most the policy's ``batch.max_file_bytes``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}``.

A file belongs to the tenant whose key uploaded it (or, for output and error files, whose batch
made it); another tenant's id is not found, as if it did not exist. Errors are OpenAI's shape.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.batch.files import FRAMING_LIMIT
from gateway.batch.service import Batches
from gateway.batch.wire import file_object, new_id
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.services import Services

UPLOAD_PURPOSES = ("batch",)
"""What this gateway keeps files for."""
MAX_PAGE = 10_000


@post("/v1/files", status_code=200)
async def create_file(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    limit = services.policies.current.policy.batch.max_file_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FRAMING_LIMIT:
        raise PayloadTooLarge(f"The body is {declared} bytes; the file limit is {limit}.")
    file_id = new_id("file-")
    content_type = request.headers.get("content-type") or ""
    upload = await batches.files.receive(file_id, content_type, request.stream(), limit)
    purpose = upload.fields.get("purpose")
    if purpose not in UPLOAD_PURPOSES:
        await batches.files.remove(file_id)
        raise BadRequest(
            f"'purpose' must be one of {list(UPLOAD_PURPOSES)} on this gateway, not {purpose!r}.",
            param="purpose",
        )
    obj = file_object(file_id, upload.size, upload.filename or "upload.jsonl", purpose)
    await batches.store.put("file", tenant, obj)
    return json_response(obj)


@get("/v1/files")
async def list_files(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    query = request.query_params
    found = await batches.store.listing("file", tenant)
    purpose = query.get("purpose")
    if purpose:
        found = [f for f in found if f["purpose"] == purpose]
    if query.get("order") == "asc":
        found.reverse()
    return json_response(page(found, query, default_limit=MAX_PAGE))


@get("/v1/files/{file_id:str}")
async def retrieve_file(
    request: Request[Any, Any, Any], services: NamedDependency[Services], file_id: FromPath[str]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    return json_response(await _file(batches, tenant, file_id))


@get("/v1/files/{file_id:str}/content")
async def file_content(
    request: Request[Any, Any, Any], services: NamedDependency[Services], file_id: FromPath[str]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    await _file(batches, tenant, file_id)
    try:
        data = await batches.files.read(file_id)
    except FileNotFoundError:
        raise not_found("file", file_id) from None
    return Response(data, media_type="application/octet-stream")


@delete("/v1/files/{file_id:str}", status_code=200)
async def delete_file(
    request: Request[Any, Any, Any], services: NamedDependency[Services], file_id: FromPath[str]
) -> Response[bytes]:
    tenant, batches = owner(request, services)
    if not await batches.store.delete("file", tenant, file_id):
        raise not_found("file", file_id)
    await batches.files.remove(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})


async def _file(batches: Batches, tenant: str, file_id: str) -> dict[str, Any]:
    found = await batches.store.get("file", tenant, file_id)
    if found is None:
        raise not_found("file", file_id)
    return found


def owner(request: Request[Any, Any, Any], services: Services) -> tuple[str, Batches]:
    """The tenant of the request's key (401 without one), and the Batch API's state."""
    headers = request.headers
    ring = services.policies.current.tenants
    tenant = tenant_of(ring, headers.get("authorization"), headers.get("x-api-key"))
    if services.batches is None:
        raise GatewayError("The Batch API is not running.", status=503, code="batch_unavailable")
    return tenant, services.batches


def not_found(kind: str, obj_id: str) -> BadRequest:
    return BadRequest(f"No such {kind}: {obj_id!r}.", param="id", code="not_found", status=404)


def page(objects: list[dict[str, Any]], query: Any, *, default_limit: int) -> dict[str, Any]:
    """OpenAI's cursor page: the objects after the ``after`` id, at most ``limit``."""
    after, raw_limit = query.get("after"), query.get("limit")
    try:
        limit = default_limit if raw_limit is None else int(raw_limit)
    except ValueError:
        raise BadRequest("'limit' must be an integer.", param="limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit")
    if after:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1 :] if after in ids else []
    data = objects[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(objects) > limit,
    }


def json_response(obj: Any) -> Response[bytes]:
    return Response(msgspec.json.encode(obj), media_type="application/json")


ROUTES = [create_file, list_files, retrieve_file, file_content, delete_file]
