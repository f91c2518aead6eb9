"""The feedback door: ``POST /v1/feedback``, a client's score of an answer it got.

The body names the answer by the ``x-gateway-request-id`` the gateway sent with it, a
``score`` from 0 (useless) to 1 (fully satisfying) and an optional ``text``. The score is a
label for the router (`gateway.labels_store`), kept beside the request's features under the same
request id as its ledger record. A tenant's key is required, and a tenant can only rate its own
requests: another tenant's id, or a request whose features were not kept (the policy's
``shadow`` section decides which are), is not found (404). Errors take OpenAI's shape.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from gateway.api.door import read_body
from gateway.errors import BadRequest
from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.normalize import decode_object
from gateway.pipeline.services import Services

MAX_BODY = 16 * 1024
MAX_TEXT = 4000
MAX_ID = 200


@post("/v1/feedback", status_code=200)
async def feedback(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    headers = request.headers
    tenant = tenant_of(
        services.policies.current.tenants, headers.get("authorization"), headers.get("x-api-key")
    )
    request_id, score, text = _read(decode_object(await read_body(request, MAX_BODY)))
    if not await services.labels.feedback(tenant, request_id, score, text):
        raise BadRequest(
            f"No request with id {request_id!r} to rate: it is another tenant's, unknown, or "
            "one whose features the gateway did not keep (see the policy's shadow section).",
            param="request_id",
            code="request_not_found",
            status=404,
        )
    body = {"object": "feedback", "request_id": request_id, "score": score, "stored": True}
    return Response(msgspec.json.encode(body), media_type="application/json")


def _read(body: dict[str, Any]) -> tuple[str, float, str | None]:
    """The body's fields, checked: a clear 400 naming the field, never a 500."""
    unknown = sorted(set(body) - {"request_id", "score", "text"})
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}.", param=unknown[0])
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID:
        raise BadRequest(
            f"'request_id' must be the answer's x-gateway-request-id (a string of 1 to {MAX_ID} "
            "characters).",
            param="request_id",
        )
    score = body.get("score")
    if (
        isinstance(score, bool)
        or not isinstance(score, (int, float))
        or not math.isfinite(score)
        or not 0 <= score <= 1
    ):
        raise BadRequest("'score' must be a number from 0 to 1.", param="score")
    text = body.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        raise BadRequest(f"'text' must be a string of at most {MAX_TEXT} characters.", param="text")
    return request_id, float(score), text
