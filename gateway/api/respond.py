"""Results to HTTP: the gateway's response headers and the SSE framing of streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Response

from gateway.pipeline.run import Completed, Streaming
from gateway.providers import AttemptFailed

log = logging.getLogger(__name__)


def headers(result: Completed | Streaming) -> dict[str, str]:
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


async def sse(chunks: AsyncGenerator[bytes, None], request_id: str) -> AsyncGenerator[bytes, None]:
    """Frame the chunks as SSE; a stream that breaks ends with an error event.

    Closing this generator (the client went away) closes the upstream stream too.
    """
    try:
        async for chunk in chunks:
            yield b"data: " + chunk + b"\n\n"
        yield b"data: [DONE]\n\n"
    except AttemptFailed as exc:
        log.warning("stream %s broke after it started: %s", request_id, exc.message)
        yield (
            b"data: "
            + msgspec.json.encode(
                {
                    "error": {
                        "message": f"The upstream stream broke: {exc.message}",
                        "type": "api_error",
                        "param": None,
                        "code": "upstream_stream_broken",
                    }
                }
            )
            + b"\n\n"
        )
    finally:
        await chunks.aclose()


class SSEResponse(Response[bytes]):
    """Sends an SSE stream straight to the ASGI server, one message per chunk.

    Litestar's own streaming response runs each stream in a task group with a second task per
    request; this one costs a single future that notices the client leaving (uvicorn drops
    writes to a closed connection silently, so the stream would otherwise run to its end).
    """

    def __init__(self, chunks: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        super().__init__(b"", headers=headers, media_type="text/event-stream")
        self._chunks = chunks

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> Any:
        return self._send

    async def _send(self, scope: Any, receive: Any, send: Any) -> None:
        # The body was read in full before the answer began, so the next message can only be
        # http.disconnect.
        gone = asyncio.ensure_future(receive())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        *((k.encode(), v.encode()) for k, v in self.headers.items()),
                    ],
                }
            )
            async for chunk in self._chunks:
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            await self._chunks.aclose()
