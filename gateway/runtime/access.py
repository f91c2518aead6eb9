"""Closed by default: a policy that names no tenants is open access (any API key works), which
is only safe where nobody else can connect. The policy store refuses to load such a policy, at
start and on every reload, unless the gateway listens on a loopback address or was started with
``--allow-open`` (the HTTP side of it is :mod:`gateway.api.guard`)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from gateway.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost"})


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.1``, ``::1``, ``[::1]``). Memoised: an
    open gateway asks it of every request's ``Host``, and parsing an address takes microseconds."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_access_refused(tenants: Iterable[str], settings: Settings) -> str | None:
    """Why a policy with these tenants may not be served with these settings, or None."""
    if any(True for _ in tenants) or settings.allow_open or is_loopback(settings.host):
        return None
    return (
        f"the policy defines no tenants, so anyone could use the gateway; refusing it while "
        f"listening on {settings.host}. Add tenants with API keys, or start with --allow-open "
        "if this is really meant."
    )
