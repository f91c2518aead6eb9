"""What the handlers declare as parameters, and how Litestar provides it (`DEPENDENCIES`).

The app's `State` holds the policy store and the services the lifespan opened; these
providers are the one place that reads them, so a handler names what it needs (``runtime``,
``services``, ``ledger``, ``admins``) and a test app can provide its own.
"""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from gateway.ledger.base import Ledger
from gateway.pipeline.services import Services
from gateway.runtime.keys import KeyRing
from gateway.runtime.store import PolicyStore, Runtime


def policy_store(state: State) -> PolicyStore:
    store: PolicyStore = state.store
    return store


def runtime(state: State) -> Runtime:
    """The policy in force now; a request keeps the one it started with to its end."""
    return policy_store(state).current


def services(state: State) -> Services:
    found: Services = state.services
    return found


def ledger(services: NamedDependency[Services]) -> Ledger:
    return services.ledger


def admins(runtime: NamedDependency[Runtime]) -> KeyRing:
    return runtime.admins


DEPENDENCIES = {
    "policy_store": Provide(policy_store, sync_to_thread=False),
    "runtime": Provide(runtime, sync_to_thread=False),
    "services": Provide(services, sync_to_thread=False),
    "ledger": Provide(ledger, sync_to_thread=False),
    "admins": Provide(admins, sync_to_thread=False),
}
