"""HTTP endpoints: OpenAI-compatible, health, and admin. Thin: parse, run the pipeline, respond.

Every error leaves through `render_error` in OpenAI's shape, with the request id when there
is one; nothing else (framework errors included) reaches a client with a stack trace.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.api import respond
from gateway.errors import BadRequest, FrameworkError, GatewayError, PayloadTooLarge
from gateway.pipeline import ledger as account
from gateway.pipeline import normalize
from gateway.pipeline import run as pipeline
from gateway.pipeline.run import Completed
from gateway.pipeline.services import Services
from gateway.policy.load import PolicyError
from gateway.runtime import keys as auth
from gateway.runtime.store import PolicyStore

log = logging.getLogger(__name__)
JSON = "application/json"


def _store(request: Request[Any, Any, Any]) -> PolicyStore:
    store: PolicyStore = request.app.state.store
    return store


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes]:
    arrived = (time.time(), time.monotonic())
    request_id = normalize.new_request_id()
    request.state.request_id = request_id
    runtime = _store(request).current
    services: Services = request.app.state.services
    trace = services.telemetry.start_request(request.headers, request_id)
    with trace.activate():  # an error escaping it ends the request's span with its status
        tenant = auth.tenant_of(runtime.tenants, request.headers.get("authorization"))
        try:
            raw = await _read_body(request, runtime.policy.limits.max_body_bytes)
            chat = normalize.chat_request(
                raw,
                request_id=request_id,
                tenant=tenant,
                tags_header=request.headers.get("x-gateway-tags"),
                session_id=request.headers.get("x-session-id"),
                cache_control=request.headers.get("cache-control"),
                arrived=arrived,
            )
            trace.describe(chat)
            result = await pipeline.run(runtime, services, chat, trace)
        except GatewayError as exc:
            record = account.failure(
                request_id, tenant, arrived, exc.status_code, free=exc.before_any_model
            )
            services.ledger.record(record)
            services.telemetry.request_done(trace, record)
            raise
    headers = respond.headers(result)
    if isinstance(result, Completed):
        return Response(result.body, media_type=JSON, headers=headers)
    headers["cache-control"] = "no-cache"
    return respond.SSEResponse(respond.sse(result.chunks, request_id), headers)


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body, refused as soon as it passes the policy's limit (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    runtime = _store(request).current
    auth.tenant_of(runtime.tenants, request.headers.get("authorization"))
    return Response(runtime.models_body, media_type=JSON)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Ready once the policy is loaded; ``degraded`` (still serving) when a store is down."""
    runtime = _store(request).current
    services: Services = request.app.state.services
    cache, ledger = services.exact.store.health(), services.ledger.health()
    stores: dict[str, Any] = {**cache, "ledger": ledger}
    semantic = services.semantic.health()
    if semantic is not None:
        stores["semantic_cache"] = semantic
    degraded = (
        cache["exact_cache"] == "degraded"
        or ledger.get("redis") == "down"
        or services.semantic.degraded()
    )
    return {
        "status": "degraded" if degraded else "ready",
        "policy": {
            "path": str(runtime.loaded.path),
            "version": runtime.loaded.digest,
            "loaded_at": runtime.loaded_at,
        },
        "stores": stores,
    }


@post("/admin/policy/reload", status_code=200)
async def reload_policy(request: Request[Any, Any, Any]) -> dict[str, Any]:
    store = _store(request)
    auth.require_admin(store.current.admins, request.headers.get("authorization"))
    previous = store.current.loaded.digest
    try:
        runtime = await store.reload()
    except PolicyError as exc:
        raise InvalidPolicy(exc, previous) from exc
    return {"status": "reloaded", "version": runtime.loaded.digest, "previous": previous}


@get("/admin/policy")
async def show_policy(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The running policy, secrets redacted, so an operator can see what is in force."""
    runtime = _store(request).current
    auth.require_admin(runtime.admins, request.headers.get("authorization"))
    policy = runtime.policy.model_dump(mode="json")
    for model in policy["models"].values():
        if model.get("api_key"):
            model["api_key"] = "[redacted]"
    for tenant in policy["tenants"].values():
        tenant["api_keys"] = ["[redacted]"] * len(tenant["api_keys"])
    if policy.get("admin"):
        policy["admin"]["api_keys"] = ["[redacted]"] * len(policy["admin"]["api_keys"])
    return {"path": str(runtime.loaded.path), "version": runtime.loaded.digest, "policy": policy}


@delete("/admin/cache", status_code=200)
async def flush_cache(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Flush one tenant's cached answers (``?tenant=``) or everyone's."""
    auth.require_admin(_store(request).current.admins, request.headers.get("authorization"))
    services: Services = request.app.state.services
    tenant = request.query_params.get("tenant") or None
    exact = await services.exact.store.flush(tenant)
    return {
        "flushed": {"exact": exact, "semantic": await services.semantic.flush(tenant)},
        "tenant": tenant,
    }


class InvalidPolicy(BadRequest):
    """A reload was refused; the body lists every problem of the new file."""

    def __init__(self, error: PolicyError, running: str) -> None:
        super().__init__(
            f"The new policy is invalid; version {running} stays in force.", code="invalid_policy"
        )
        self.problems = [str(p) for p in error.problems]

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["problems"] = self.problems
        return body


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if not isinstance(exc, GatewayError):
        exc = _translate(exc)
    log.log(
        exc.log_level,
        "%s %s -> %s: %s",
        request.method,
        request.url.path,
        exc.status_code,
        exc.message,
    )
    headers = dict(exc.headers)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["x-gateway-request-id"] = request_id
    return Response(exc.encode(), status_code=exc.status_code, media_type=JSON, headers=headers)


def _translate(exc: Exception) -> GatewayError:
    """Framework errors (unknown path, wrong method) and bugs, in the same shape."""
    if isinstance(exc, HTTPException):
        return FrameworkError(exc.status_code, str(exc.detail))
    log.exception("unhandled error", exc_info=exc)
    return GatewayError("The gateway failed to handle the request.", code="internal_error")


ROUTES = [
    chat_completions,
    list_models,
    healthz,
    readyz,
    reload_policy,
    show_policy,
    flush_cache,
]
EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: render_error}
