"""What the handlers declare as parameters, and how Litestar provides it (`dependencies`).

The app's `State` holds the `Services` the lifespan opened; these providers are the one place
that reads it, so a handler names what it needs (``services``, ``runtime``, ``policy_store``,
``ledger``, ``admins``, ``admin``) and a test app can provide its own.

NOTE: on cost, as measured with bench/overhead. Every provider hangs off ``services``, one
after another: Litestar resolves the dependencies of one level concurrently, in an anyio task
group per request when there are several, and two independent ones on the chat path cost about
60 µs of CPU a request. ``services`` itself takes no parameters (it closes over the app's
state): a provider that declares ``state`` gets a new `State` wrapper and a validation pass on
every request.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from gateway.ledger.base import Ledger
from gateway.pipeline.authenticate import require_admin
from gateway.pipeline.services import Services
from gateway.runtime.keys import KeyRing
from gateway.runtime.store import PolicyStore, Runtime


def runtime(services: NamedDependency[Services]) -> Runtime:
    """The policy in force now; a request keeps the one it started with to its end."""
    return services.policies.current


def policy_store(services: NamedDependency[Services]) -> PolicyStore:
    return services.policies


def ledger(services: NamedDependency[Services]) -> Ledger:
    return services.ledger


def admins(runtime: NamedDependency[Runtime]) -> KeyRing:
    return runtime.admins


def admin(request: Request[Any, Any, Any], admins: NamedDependency[KeyRing]) -> str:
    """The admin calling (``Authorization: Bearer <admin key>``); anyone else gets 401. An
    admin handler declares ``admin`` and needs no check of its own."""
    require_admin(admins, request.headers.get("authorization"))
    return "admin"


def dependencies(state: State) -> dict[str, Provide]:
    """The providers of one app, whose lifespan puts its `Services` in ``state.services``."""

    def services() -> Services:
        found: Services = state.services
        return found

    return {
        "services": Provide(services, sync_to_thread=False),
        "runtime": Provide(runtime, sync_to_thread=False),
        "policy_store": Provide(policy_store, sync_to_thread=False),
        "ledger": Provide(ledger, sync_to_thread=False),
        "admins": Provide(admins, sync_to_thread=False),
        "admin": Provide(admin, sync_to_thread=False),
    }
