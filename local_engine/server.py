"""The HTTP face of a `LocalEngine`: a thin Litestar app, OpenAI-compatible.

Routes: ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``, ``GET /healthz``,
``GET /metrics``. Every error leaves in OpenAI's shape through `_render_error`, with
``Retry-After`` when the engine is overloaded.

A stream is answered only once its first chunk exists, so a bad request or a full queue still
gets a proper status instead of a 200 with an error inside. A client that disconnects makes
Litestar cancel the stream, which closes the engine's iterator and so cancels the request;
a non-streaming request is cancelled the same way by `_unless_disconnected`.
An error after the first chunk is sent as a final ``data: {"error": ...}`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.response import Stream

from local_engine.engine import LocalEngine
from local_engine.errors import EngineError, bad_request

log = logging.getLogger("local_engine")
JSON = "application/json"
MAX_BODY_BYTES = 8 * 1024 * 1024
T = TypeVar("T")


def _engine(request: Request[Any, Any, Any]) -> LocalEngine:
    engine: LocalEngine = request.app.state.engine
    return engine


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


async def _sse_stream(
    first: dict[str, Any], chunks: AsyncGenerator[dict[str, Any], None]
) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(chunks):  # cancelled or closed: the engine cancels
        yield _sse(first)
        try:
            async for chunk in chunks:
                yield _sse(chunk)
        except EngineError as exc:
            log.warning("stream failed after its first chunk: %s", exc.message)
            yield _sse(exc.body())
            return
    yield b"data: [DONE]\n\n"


@post("/v1/chat/completions", status_code=200, request_max_body_size=MAX_BODY_BYTES)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    engine = _engine(request)
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from exc
    if isinstance(body, dict) and body.get("stream"):
        chunks = engine.chat_stream(body)
        try:
            first = await anext(chunks)
        except BaseException:
            await chunks.aclose()
            raise
        return Stream(
            _sse_stream(first, chunks),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    result = await _unless_disconnected(request, engine.chat(body))
    if result is None:  # nobody is listening any more; 499 is what the access log shows
        return Response(b"", status_code=499)
    return Response(msgspec.json.encode(result), media_type=JSON)


async def _unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T | None:
    """Await ``work``; if the client leaves first, cancel it (freeing its slot) and return None.

    Litestar cancels streams on disconnect but not plain handlers, so this listens itself: the
    body is already read, so the next ASGI message can only be ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():  # the client left: not our cancellation
            return None
        raise


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(msgspec.json.encode(_engine(request).models()), media_type=JSON)


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    engine = _engine(request)
    ok = engine.is_running()
    body = {"status": "ok" if ok else "down", "model": engine.model_name}
    return Response(msgspec.json.encode(body), media_type=JSON, status_code=200 if ok else 503)


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    engine = _engine(request)
    return Response(engine.metrics.render(), media_type=engine.metrics.content_type)


def _render_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, EngineError):
        error = exc
    elif isinstance(exc, HTTPException):  # the framework's own: unknown path, wrong method, ...
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        error = EngineError(exc.status_code, str(exc.detail), kind)
    else:
        log.exception("unexpected error", exc_info=exc)
        error = EngineError(500, "Internal error in the local engine.", "server_error")
    return Response(
        msgspec.json.encode(error.body()),
        status_code=error.status,
        media_type=JSON,
        headers=error.headers(),
    )


def create_app(engine: LocalEngine, *, manage_engine: bool = True) -> Litestar:
    """An app serving ``engine``; with ``manage_engine`` its lifespan starts and closes it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
        try:
            yield
        finally:
            if manage_engine:
                await engine.aclose()

    return Litestar(
        route_handlers=[chat_completions, list_models, healthz, metrics],
        lifespan=[lifespan],
        exception_handlers={Exception: _render_error},
        state=State({"engine": engine}),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
