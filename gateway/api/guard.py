"""Closed by default, on the HTTP side: while the policy has no tenants (open access, served
only on loopback unless ``--allow-open``), only loopback ``Host`` names are answered.

On loopback, cross-site requests are the remaining way in: a web page can POST ``text/plain``
JSON to 127.0.0.1 without the browser asking first, and read the answers after DNS rebinding
(its own name resolving to 127.0.0.1, so the ``Host`` header carries that name). The doors take
only ``application/json`` bodies (`gateway.api.door.read_body`), which makes the browser ask
first (a CORS preflight the gateway never approves); the ``Host`` check here turns a rebound
name away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.types import ASGIApp

from gateway.errors import Forbidden, GatewayError
from gateway.runtime.access import is_loopback
from gateway.settings import Settings


class OpenDoorGuard:
    """ASGI middleware (see the module docstring); ``is_open``: the policy now in force has no
    tenants. Refused requests never reach a door, so they leave no ledger record."""

    def __init__(self, app: ASGIApp, settings: Settings, is_open: Callable[[], bool]) -> None:
        self._app = app
        self._check_host = not settings.allow_open
        self._is_open = is_open

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await _refuse(problem, send)
                return
        await self._app(scope, receive, send)

    def _problem(self, scope: Any) -> GatewayError | None:
        if self._check_host and self._is_open():
            raw = next((v for k, v in scope["headers"] if k == b"host"), b"")
            host = _hostname(raw.decode("latin-1"))
            if not is_loopback(host):
                return Forbidden(
                    f"This gateway has no tenants and answers only on loopback names, not "
                    f"{host!r}.",
                    code="host_not_allowed",
                )
        return None


def _hostname(host: str) -> str:
    """The name of a ``Host`` header: ``[::1]:8080`` -> ``[::1]``, ``localhost:8080`` ->
    ``localhost``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.partition(":")[0]


async def _refuse(error: GatewayError, send: Any) -> None:
    body = error.encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def guard(settings: Settings, is_open: Callable[[], bool]) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware factory Litestar takes."""

    def wrap(app: ASGIApp) -> ASGIApp:
        return OpenDoorGuard(app, settings, is_open)

    return wrap
