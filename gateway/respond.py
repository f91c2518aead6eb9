"""Results to HTTP: the gateway's response headers and the SSE framing of streams."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import msgspec

from gateway.pipeline import Completed, Streaming
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
