"""The app factory: settings in, an ASGI app out; the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State

from gateway import api
from gateway.api.guard import guard
from gateway.api.in_flight import count_live
from gateway.background import Background
from gateway.batch.files import FileStore
from gateway.batch.runner import Runner
from gateway.batch.service import Batches, open_store
from gateway.exact_store import MemoryStore, RedisStore, Store
from gateway.labels_store import open_labels
from gateway.ledger.store import open_ledger
from gateway.ml.loader import Models
from gateway.pipeline.services import Services
from gateway.policy.schema import Policy
from gateway.responses_store import open_responses
from gateway.runtime.limiter import Limiter
from gateway.runtime.live import LiveTraffic
from gateway.runtime.store import PolicyStore
from gateway.semantic.lazy import LazySemanticCache
from gateway.settings import Settings
from gateway.telemetry import Telemetry


def create_app(settings: Settings) -> Litestar:
    store = PolicyStore(settings)
    telemetry = Telemetry(settings.telemetry)
    state = State({"telemetry": telemetry})
    live = LiveTraffic()

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        runtime = await store.start()
        policy = runtime.policy
        ledger = open_ledger(
            settings.redis_url,
            settings.data_dir,
            ledger_url=settings.ledger_url,
            replica=settings.replica_id,
        )
        await ledger.start()
        exact = _exact_store(settings, policy)
        if isinstance(exact, MemoryStore):
            telemetry.metrics.set_cache_size("exact", exact.__len__)
        models = Models(settings.data_dir / "models", settings.data_dir)
        semantic = LazySemanticCache(settings.redis_url, settings.ledger_url)
        await models.prepare(
            embedder=policy.cache.semantic.enabled or runtime.classifies,
            classifier=runtime.classifies,
        )
        if policy.cache.semantic.enabled:
            await semantic.get(policy.cache.semantic)
        telemetry.metrics.set_cache_size("semantic", semantic.size)
        batch_dir = settings.data_dir / "batch"
        batches = Batches(open_store(settings.redis_url, batch_dir), FileStore(batch_dir / "files"))
        services = state.services = Services(
            store,
            ledger,
            exact,
            semantic,
            models,
            Background(),
            telemetry,
            limiter=Limiter(settings.redis_url),
            responses=open_responses(
                settings.redis_url, settings.data_dir, policy.responses.max_entries
            ),
            labels=open_labels(settings.redis_url, settings.data_dir),
            batches=batches,
            live=live,
        )
        runner = Runner(services, batches, api.batches.DOORS)
        runner.start()
        telemetry.metrics.watch_load(lambda: live.in_flight, lambda: services.gate.queued)
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
            await runner.aclose(settings.shutdown_grace_s)
            await services.background.drain()
            await services.labels.aclose()
            await ledger.aclose()
            await exact.aclose()
            await semantic.aclose()
            await models.aclose()
            await store.aclose()
            await telemetry.aclose()
            await services.limiter.aclose()
            await services.responses.aclose()
            await batches.store.aclose()
            # What was frozen at start is garbage now: let the collector have it again (a
            # process that runs apps one after another, as the tests do, keeps no dead engine).
            gc.unfreeze()

    return Litestar(
        route_handlers=api.ROUTES,
        dependencies=api.dependencies(state),
        middleware=[guard(settings, lambda: not store.current.tenants), count_live(live)],
        lifespan=[lifespan],
        exception_handlers=api.EXCEPTION_HANDLERS,
        state=state,
        request_max_body_size=None,  # the policy's limit applies, in api.door.read_body
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


def _exact_store(settings: Settings, policy: Policy) -> Store:
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    exact = policy.cache.exact
    return MemoryStore(exact.max_entries, exact.ttl, exact.max_bytes)
