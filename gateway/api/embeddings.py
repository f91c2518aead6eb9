"""The OpenAI Embeddings door: ``POST /v1/embeddings``.

Its wire format is the pipeline's own for embeddings: `normalize` checks the body, the
embeddings stage (:mod:`gateway.pipeline.embeddings`) answers OpenAI's embeddings object, and
this door passes it on with the ``x-gateway-*`` headers. Body limit, keys, rate limits and the
failure record come from `serve`, as on every door.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency

from gateway.api.door import gateway_headers, serve
from gateway.pipeline import embeddings, normalize
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming, Turn


@post("/v1/embeddings", status_code=200)
async def create_embeddings(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return await serve(request, services, parse, _render, answer)


def parse(raw: bytes, arrival: Arrival, headers: Mapping[str, str]) -> ChatRequest:
    return normalize.embeddings_request_of(
        normalize.decode_object(raw),
        request_id=arrival.request_id,
        tenant=arrival.tenant,
        tags_header=headers.get("x-gateway-tags"),
        cache_control=headers.get("cache-control"),
        arrived=arrival.at,
    )


async def answer(turn: Turn) -> Completed | Streaming:
    return await embeddings.run(turn)


def _render(result: Completed | Streaming) -> Response[bytes]:
    assert isinstance(result, Completed)  # embeddings are never streamed
    return Response(result.body, media_type="application/json", headers=gateway_headers(result))
