"""Server-sent events straight to the ASGI server, stopped when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Response


class SSEResponse(Response[bytes]):
    """Sends an SSE stream, one message per chunk, and stops it when the client leaves.

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
