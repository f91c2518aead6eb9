"""The OpenAI legacy Completions door: ``POST /v1/completions``.

The body is translated into a Chat Completions object (:mod:`gateway.wire.completions`) and
answered by the chat pipeline; the answer, or each chunk of its stream (cache hits replayed
alike), is translated back into ``text_completion`` objects, framed as the chat door frames
them (``data: {...}`` then ``data: [DONE]``, an error event when an upstream stream breaks).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency

from gateway.api.chat import _sse as openai_sse
from gateway.api.door import gateway_headers, pipeline_request, serve
from gateway.api.sse import SSEResponse
from gateway.pipeline import normalize
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming
from gateway.wire import completions


@post("/v1/completions", status_code=200)
async def legacy_completions(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return await serve(request, services, parse, _render)


def parse(raw: bytes, arrival: Arrival, headers: Mapping[str, str]) -> ChatRequest:
    return pipeline_request(completions.chat_body(normalize.decode_object(raw)), arrival, headers)


def _render(result: Completed | Streaming) -> Response[bytes]:
    headers = gateway_headers(result)
    if isinstance(result, Completed):
        body = completions.completion(result.body)
        return Response(body, media_type="application/json", headers=headers)
    headers["cache-control"] = "no-cache"
    chunks = _translated(result.chunks)
    return SSEResponse(openai_sse(chunks, result.request.request_id), headers)


async def _translated(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """The chat chunks as ``text_completion`` chunks; closing it closes the chat stream."""
    try:
        async for chat_chunk in chunks:
            out = completions.chunk(chat_chunk)
            if out is not None:
                yield out
    finally:
        await chunks.aclose()
