"""A minimal gateway for ledger tests: the ledger's admin handlers on a real Litestar app.

It stands in for the app factory (which mounts the same handlers), providing their two
dependencies itself: ``admins`` (a real `KeyRing`) and ``ledger``, a real ledger that the
lifespan starts and closes. ``POST /v1/chat/completions`` is a toy gateway that answers at once and
writes one ledger record per request, as the pipeline does: the same prompt twice is an exact
cache hit, a prompt of more than 8 words goes to ``large``, others to ``small``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post
from litestar.datastructures import State
from litestar.di import Provide

from gateway.api import EXCEPTION_HANDLERS, deps, reports
from gateway.ledger import LedgerRecord, open_ledger
from gateway.runtime.keys import KeyRing

ADMIN_KEY = "sk-test-ledger-admin-0123456789"
ADMINS = KeyRing({"admin": [ADMIN_KEY]})
PRICES = {"small": (Decimal("0.10"), Decimal("0.20")), "large": (Decimal("2.50"), Decimal("10"))}


def _cost(model: str, tokens_in: int, tokens_out: int) -> Decimal:
    price_in, price_out = PRICES[model]
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


@post("/v1/chat/completions", status_code=200)
async def toy_completions(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = msgspec.json.decode(await request.body())
    text = " ".join(str(m.get("content", "")) for m in body["messages"])
    seen: dict[str, str] = request.app.state.seen
    tokens_in, tokens_out = 10 + len(text.split()), 20
    model = "large" if len(text.split()) > 8 else "small"
    cache = "miss"
    if text in seen:
        cache, model = "exact", seen[text]
    seen[text] = model
    tags = dict(
        item.split("=", 1)
        for item in (request.headers.get("x-gateway-tags") or "").split(",")
        if "=" in item
    )
    cost = Decimal(0) if cache == "exact" else _cost(model, tokens_in, tokens_out)
    record = LedgerRecord(
        time=time.time(),
        request_id=uuid.uuid4().hex,
        tenant="default",
        tags=tags,
        route="cache" if cache == "exact" else f"to-{model}",
        model=model,
        cache=cache,  # type: ignore[arg-type]
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost,
        baseline_cost_usd=_cost("large", tokens_in, tokens_out),
    )
    request.app.state.services.ledger.record(record)
    reply = {
        "id": "chatcmpl-" + record.request_id,
        "object": "chat.completion",
        "created": int(record.time),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
    }
    return Response(
        msgspec.json.encode(reply),
        media_type="application/json",
        headers={
            "x-gateway-cache": cache,
            "x-gateway-model": model,
            "x-gateway-cost-usd": f"{cost:f}",
        },
    )


def make_app(data_dir: Path, redis_url: str | None = None, **options: Any) -> Litestar:
    ledger = open_ledger(redis_url, data_dir, **options)

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await ledger.start()
        try:
            yield
        finally:
            await ledger.aclose()

    return Litestar(
        route_handlers=[*reports.ROUTES, toy_completions],
        dependencies={
            "ledger": Provide(lambda: ledger, sync_to_thread=False),
            "admins": Provide(lambda: ADMINS, sync_to_thread=False),
            "admin": Provide(deps.admin, sync_to_thread=False),
        },
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        state=State({"services": SimpleNamespace(ledger=ledger), "seen": {}}),
        openapi_config=None,
        logging_config=None,
    )
