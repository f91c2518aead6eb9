"""Admin endpoints behind the admin key: the running policy, its reload, and cache flushes."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.di import NamedDependency

from gateway.errors import BadRequest
from gateway.pipeline.services import Services
from gateway.policy.load import PolicyError
from gateway.policy.schema import Policy
from gateway.policy.secrets import MODEL_SECRETS, REDACTED, redact_fields, redact_url, secret_name
from gateway.runtime.store import PolicyStore, Runtime


@post("/admin/policy/reload", status_code=200)
async def reload_policy(
    policy_store: NamedDependency[PolicyStore],
    admin: NamedDependency[str],
) -> dict[str, Any]:
    previous = policy_store.current.loaded.digest
    try:
        runtime = await policy_store.reload()
    except PolicyError as exc:
        raise InvalidPolicy(exc, previous) from exc
    return {"status": "reloaded", "version": runtime.loaded.digest, "previous": previous}


@get("/admin/policy")
async def show_policy(
    runtime: NamedDependency[Runtime],
    admin: NamedDependency[str],
) -> dict[str, Any]:
    """The running policy, secrets redacted, so an operator can see what is in force."""
    return {
        "path": str(runtime.loaded.path),
        "version": runtime.loaded.digest,
        "policy": redacted(runtime.policy),
    }


def redacted(policy: Policy) -> dict[str, Any]:
    """The policy as JSON, every secret replaced by ``[redacted]``: models' API keys and AWS
    keys, tenant and admin keys, credential headers, and credentials in base URLs
    (`gateway.policy.secrets`)."""
    out = policy.model_dump(mode="json")
    for model in out["models"].values():
        redact_fields(model, MODEL_SECRETS)
        if model.get("base_url"):
            model["base_url"] = redact_url(model["base_url"])
        headers = model.get("headers") or {}
        for name in headers:
            if secret_name(name):
                headers[name] = REDACTED
    for tenant in out["tenants"].values():
        tenant["api_keys"] = [REDACTED] * len(tenant["api_keys"])
    if out.get("admin"):
        out["admin"]["api_keys"] = [REDACTED] * len(out["admin"]["api_keys"])
    return out


@delete("/admin/cache", status_code=200)
async def flush_cache(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    admin: NamedDependency[str],
) -> dict[str, Any]:
    """Flush one tenant's cached answers (``?tenant=``) or everyone's."""
    tenant = request.query_params.get("tenant") or None
    exact = await services.exact.flush(tenant)
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


ROUTES = [reload_policy, show_policy, flush_cache]
