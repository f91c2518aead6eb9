"""The app factory: settings in, an ASGI app out; the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State

from gateway.api import handlers as api
from gateway.api import reports as ledger_http
from gateway.background import Background
from gateway.ledger.store import open_ledger
from gateway.ml.loader import Models
from gateway.pipeline.exact_cache import ExactCache, MemoryStore, RedisStore, Store
from gateway.pipeline.semantic_cache import SemanticStage
from gateway.pipeline.services import Services
from gateway.policy.schema import Policy
from gateway.runtime.store import PolicyStore
from gateway.settings import Settings
from gateway.telemetry import Telemetry, metrics_endpoint


def create_app(settings: Settings) -> Litestar:
    store = PolicyStore(settings)
    telemetry = Telemetry(settings.telemetry)
    state = State({"store": store, "telemetry": telemetry})

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        runtime = await store.start()
        ledger = open_ledger(settings.redis_url, settings.data_dir)
        await ledger.start()
        exact = ExactCache(_exact_store(settings, runtime.policy))
        if isinstance(exact.store, MemoryStore):
            telemetry.metrics.set_cache_size("exact", exact.store.__len__)
        models, semantic = Models(settings.data_dir / "models"), SemanticStage(settings.redis_url)
        await models.prepare(runtime)
        await semantic.prepare(runtime)
        telemetry.metrics.set_cache_size("semantic", semantic.size)
        services = state.services = Services(
            ledger, exact, Background(), telemetry, models, semantic
        )
        watcher = asyncio.create_task(store.watch()) if settings.watch_policy else None
        # Everything loaded so far (policy, models, pools) lives as long as the process: keep
        # the collector from scanning it again and again, which shows up as latency spikes.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await services.background.drain()
            await ledger.aclose()
            await exact.store.aclose()
            await semantic.aclose()
            await models.aclose()
            await store.aclose()
            await telemetry.aclose()

    return Litestar(
        route_handlers=[*api.ROUTES, *ledger_http.ROUTES, metrics_endpoint],
        lifespan=[lifespan],
        exception_handlers=api.EXCEPTION_HANDLERS,
        state=state,
        request_max_body_size=None,  # the policy's limit applies, in api._read_body
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


def _exact_store(settings: Settings, policy: Policy) -> Store:
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    return MemoryStore(policy.cache.exact.max_entries, policy.cache.exact.ttl)
