"""The app factory: settings in, an ASGI app out; the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State

from gateway import api
from gateway.policy.store import PolicyStore
from gateway.settings import Settings


def create_app(settings: Settings) -> Litestar:
    store = PolicyStore(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        store.start()
        watcher = asyncio.create_task(store.watch()) if settings.watch_policy else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await store.aclose()

    return Litestar(
        route_handlers=api.ROUTES,
        lifespan=[lifespan],
        exception_handlers=api.EXCEPTION_HANDLERS,
        state=State({"store": store}),
        request_max_body_size=None,  # the policy's limit applies, in api._read_body
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
