"""Liveness, readiness, metrics, and the model list a client picks from."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency

from gateway.pipeline.authenticate import tenant_of
from gateway.pipeline.services import Services
from gateway.runtime.keys import bearer_key
from gateway.runtime.store import Runtime


@get("/v1/models")
async def list_models(
    request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]
) -> Response[bytes]:
    headers = request.headers
    tenant_of(runtime.tenants, headers.get("authorization"), headers.get("x-api-key"))
    return Response(runtime.models_body, media_type="application/json")


@get("/metrics", include_in_schema=False)
async def metrics(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    admin: NamedDependency[str],
) -> Response[bytes]:
    """The Prometheus exposition (OpenMetrics when the scraper asks for it), for the admin key
    only: it names every tenant and what each spent."""
    body, content_type = services.telemetry.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(
    request: Request[Any, Any, Any],
    runtime: NamedDependency[Runtime],
    services: NamedDependency[Services],
) -> dict[str, Any]:
    """Ready once the policy is loaded; ``degraded`` (still serving) when a store is down.

    Anyone (a load balancer, a container health check) gets the status and each store's
    state; the details (the policy's path and version, store errors and counters) only with
    the admin key, since they describe the deployment to whoever asks.
    """
    cache, ledger = services.exact.health(), services.ledger.health()
    semantic = services.semantic.health()
    ledger_down = "down" in (ledger.get("redis"), ledger.get("sqlite"), ledger.get("postgres"))
    degraded = cache["exact_cache"] == "degraded" or ledger_down or services.semantic.degraded()
    status = "degraded" if degraded else "ready"
    if not _is_admin(runtime, request):
        states = {**cache, "ledger": "degraded" if ledger_down else ledger.get("ledger", "ok")}
        if semantic is not None:
            states["semantic_cache"] = (
                "degraded" if semantic["status"] == "degraded" else semantic["backend"]
            )
        return {"status": status, "stores": states}
    stores: dict[str, Any] = {**cache, "ledger": ledger}
    if semantic is not None:
        stores["semantic_cache"] = semantic
    return {
        "status": status,
        "policy": {
            "path": str(runtime.loaded.path),
            "version": runtime.loaded.digest,
            "loaded_at": runtime.loaded_at,
        },
        "stores": stores,
    }


def _is_admin(runtime: Runtime, request: Request[Any, Any, Any]) -> bool:
    """The request carries the admin key (no key, or a wrong one, is simply anonymous here)."""
    key = bearer_key(request.headers.get("authorization"))
    return key is not None and runtime.admins.owner(key) is not None


ROUTES = [list_models, metrics, healthz, readyz]
