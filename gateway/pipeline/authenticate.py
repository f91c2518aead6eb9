"""The authenticate stage: an API key to its tenant; and the admin key check.

The key rings (:mod:`gateway.runtime.keys`) are built from the policy; a policy without tenants
is open access, every request under one tenant, ``default``.
"""

from __future__ import annotations

from gateway.errors import Unauthorized
from gateway.runtime.keys import KeyRing, bearer_key

OPEN_TENANT = "default"
"""The tenant of every request when the policy defines no tenants (open access)."""


def tenant_of(ring: KeyRing, authorization: str | None, x_api_key: str | None = None) -> str:
    """The tenant of a request; open access when the policy has no tenants.

    The key comes as ``Authorization: Bearer <key>`` (OpenAI's SDKs, and Anthropic's with an
    auth token) or as ``x-api-key: <key>`` (Anthropic's SDK and Claude Code), on every door.
    """
    if not ring:
        return OPEN_TENANT
    key = bearer_key(authorization) or (x_api_key or "").strip() or None
    if key is None:
        raise Unauthorized(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    tenant = ring.owner(key)
    if tenant is None:
        raise Unauthorized("Incorrect API key provided.")
    return tenant


def require_admin(ring: KeyRing, authorization: str | None) -> None:
    if not ring:
        raise Unauthorized(
            "The admin API is disabled: the policy names no admin key and "
            "GATEWAY_ADMIN_KEY is not set.",
            code="admin_disabled",
        )
    key = bearer_key(authorization)
    if key is None or ring.owner(key) is None:
        raise Unauthorized("Missing or incorrect admin key.")
