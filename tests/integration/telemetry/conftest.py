"""A small gateway-shaped app built from the telemetry API alone, served on 127.0.0.1.

Its one endpoint does what the real request path does with telemetry: start the request's
trace from the incoming headers, describe the request, a span per stage, the upstream call
through `attempt` with `upstream_headers` (falling back from ``main`` to ``backup`` when the
first fails), then `request_done` with the ledger record. The upstreams are the shared
`FakeUpstream`s, which record the headers they receive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from litestar import Litestar, Request, Response, post
from litestar.datastructures import State
from litestar.di import Provide

from gateway.api import deps
from gateway.api.health import metrics
from gateway.ledger.record import LedgerRecord
from gateway.pipeline import normalize
from gateway.pipeline.services import Services
from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed
from gateway.runtime.keys import KeyRing
from gateway.telemetry import Telemetry, attempt, fallback, upstream_headers
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread

ADMIN_KEY = "sk-test-telemetry-admin-0123456789"
ADMINS = KeyRing({"admin": [ADMIN_KEY]})
SCRAPE = {"authorization": f"Bearer {ADMIN_KEY}"}

PROMPT = "the secret launch code is 0000"


def build_app(telemetry: Telemetry, primary: FakeUpstream, backup: FakeUpstream) -> Litestar:
    models = {
        "main": ModelConfig(
            provider="openai_compatible", base_url=primary.base_url, model="upstream-main"
        ),
        "backup": ModelConfig(
            provider="openai_compatible", base_url=backup.base_url, model="upstream-backup"
        ),
    }

    async def call(session: aiohttp.ClientSession, raw: bytes) -> tuple[str, bytes]:
        last: AttemptFailed | None = None
        for name in ("main", "backup"):
            if last is not None:
                fallback("main", name)
            config = models[name]
            try:
                with attempt(name, config, 1):
                    async with session.post(
                        f"{config.base_url}/chat/completions",
                        data=raw,
                        headers={"content-type": "application/json", **upstream_headers()},
                    ) as reply:
                        if reply.status >= 400:
                            raise AttemptFailed("status", "upstream error", status=reply.status)
                        return name, await reply.read()
            except AttemptFailed as exc:
                last = exc
        assert last is not None
        raise last

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[bytes]:
        arrived = (time.time(), time.monotonic())
        request_id = normalize.new_request_id()
        trace = telemetry.start_request(request.headers, request_id)
        with trace.activate():
            chat = normalize.chat_request(
                await request.body(),
                request_id=request_id,
                tenant="team-a",
                tags_header=request.headers.get("x-gateway-tags"),
                arrived=arrived,
            )
            trace.describe(chat)
            with trace.stage("exact_cache") as span:
                span.set_attribute("gateway.cache", "miss")
            with trace.stage("route") as span:
                span.set_attribute("gateway.route", "default")
            with trace.stage("call"):
                async with aiohttp.ClientSession() as session:
                    try:
                        model, body = await call(session, await request.body())
                    except AttemptFailed:
                        record = LedgerRecord(
                            time=arrived[0], request_id=request_id, tenant="team-a", status=502
                        )
                        telemetry.request_done(trace, record)
                        return Response(b'{"error": {}}', status_code=502)
            with trace.stage("ledger"):
                record = LedgerRecord(
                    time=arrived[0],
                    request_id=request_id,
                    tenant="team-a",
                    tags=dict(chat.tags),
                    route="default",
                    model=model,
                    cache="miss",
                    input_tokens=7,
                    cached_input_tokens=2,
                    output_tokens=5,
                    cost_usd=Decimal("0.0000675"),
                    baseline_cost_usd=Decimal("0.0000675"),
                    latency_ms=round((time.monotonic() - arrived[1]) * 1000, 3),
                    difficulty=0.25,
                    category="chat",
                )
            telemetry.request_done(
                trace,
                record,
                prompt=PROMPT,
                completion="ok",
                include_text=request.headers.get("x-log-prompts") == "yes",
            )
        return Response(body, media_type="application/json")

    # /metrics reads only the telemetry of the services
    services = Services(None, None, None, None, None, None, telemetry)  # type: ignore[arg-type]
    return Litestar(
        [chat, metrics],
        dependencies={
            "services": Provide(lambda: services, sync_to_thread=False),
            "admins": Provide(lambda: ADMINS, sync_to_thread=False),
            "admin": Provide(deps.admin, sync_to_thread=False),
        },
        state=State({"telemetry": telemetry}),
        debug=False,
    )


@pytest.fixture
def serve(
    primary: FakeUpstream, backup: FakeUpstream
) -> Iterator[Callable[[Telemetry], ServerThread]]:
    """Serve the small app over a given `Telemetry`; stopped (and the telemetry shut down)
    at the end of the test."""
    started: list[tuple[ServerThread, Telemetry]] = []

    def start(telemetry: Telemetry) -> ServerThread:
        server = ServerThread(build_app(telemetry, primary, backup)).start()
        started.append((server, telemetry))
        return server

    yield start
    for server, telemetry in started:
        server.stop()
        telemetry.shutdown()
