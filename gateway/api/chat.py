"""The OpenAI Chat Completions door: ``POST /v1/chat/completions``.

The pipeline's request type is Chat Completions-shaped, so reading it is `normalize`'s check of
the fields the gateway acts on; writing the result back is the body as the model sent it, or
its chunks framed as SSE (``data: {...}`` then ``data: [DONE]``), with an error event when an
upstream stream breaks after it started.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from gateway.api.door import gateway_headers, pipeline_request, serve
from gateway.api.sse import SSEResponse
from gateway.pipeline import normalize
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Chunks, Completed, Streaming, batches
from gateway.providers import AttemptFailed

log = logging.getLogger(__name__)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return await serve(request, services, parse, _render)


def parse(raw: bytes, arrival: Arrival, headers: Mapping[str, str]) -> ChatRequest:
    return pipeline_request(normalize.decode_object(raw), arrival, headers)


def _render(result: Completed | Streaming) -> Response[bytes]:
    headers = gateway_headers(result)
    if isinstance(result, Completed):
        return Response(result.body, media_type="application/json", headers=headers)
    headers["cache-control"] = "no-cache"
    chunks = result.chunks
    if isinstance(chunks, Chunks) and chunks.whole is not None:
        # A replayed answer is all here: one plain response (about 10 % less CPU than a stream).
        body = _events(chunks.whole) + _DONE
        return Response(body, media_type="text/event-stream", headers=headers)
    return SSEResponse(_sse(chunks, result.request.request_id), headers)


async def _sse(chunks: AsyncGenerator[bytes, None], request_id: str) -> AsyncGenerator[bytes, None]:
    """Frame the chunks as SSE, those that arrived together in one piece (one write to the
    client); a stream that breaks ends with an error event.

    Closing this generator (the client went away) closes the upstream stream too.
    """
    arrived = batches(chunks)
    try:
        async for batch in arrived:
            yield _events(batch)
        yield _DONE
    except AttemptFailed as exc:
        log.warning("stream %s broke after it started: %s", request_id, exc.message)
        error = {
            "message": f"The upstream stream broke: {exc.message}",
            "type": "api_error",
            "param": None,
            "code": "upstream_stream_broken",
        }
        yield b"data: " + msgspec.json.encode({"error": error}) + b"\n\n"
    finally:
        await arrived.aclose()
        await chunks.aclose()  # in case ``arrived`` never started


_DONE = b"data: [DONE]\n\n"


def _events(chunks: list[bytes]) -> bytes:
    """The chunks as SSE events, in one piece."""
    return b"data: " + b"\n\ndata: ".join(chunks) + b"\n\n"
