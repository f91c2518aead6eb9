"""Shutdown: requests in flight get a bounded grace (uvicorn's timeout_graceful_shutdown), set by
``GATEWAY_SHUTDOWN_GRACE_S`` or ``gateway serve --shutdown-grace``, 30 s by default."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from gateway import telemetry
from gateway.app import create_app
from gateway.cli import app
from gateway.settings import Settings
from tests.conftest import TENANT_KEY, policy_text
from tests.fake_upstream import FakeUpstream, Fault


def test_the_grace_comes_from_the_environment() -> None:
    assert Settings.from_env({}).shutdown_grace_s == 30
    assert Settings.from_env({"GATEWAY_SHUTDOWN_GRACE_S": "7"}).shutdown_grace_s == 7


@pytest.mark.parametrize(
    ("args", "env", "grace"),
    [([], {}, 30), (["--shutdown-grace", "5"], {"GATEWAY_SHUTDOWN_GRACE_S": "9"}, 5)],
    ids=["default", "option-over-env"],
)
def test_serve_hands_the_grace_to_uvicorn(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    primary: FakeUpstream,
    backup: FakeUpstream,
    args: list[str],
    env: dict[str, str],
    grace: int,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(primary, backup))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda _app, **options: seen.update(options))
    monkeypatch.setattr(telemetry, "configure_logging", lambda *_: None)
    monkeypatch.delenv("GATEWAY_SHUTDOWN_GRACE_S", raising=False)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["serve", "--policy", str(path), *args], env=env)
    assert result.exit_code == 0, result.output
    assert seen["timeout_graceful_shutdown"] == grace


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The app's lifespan in this event loop, as an ASGI server runs it."""
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    said: asyncio.Queue[str] = asyncio.Queue()

    async def send(message: dict[str, str]) -> None:
        await said.put(message["type"])

    running = asyncio.create_task(app({"type": "lifespan", "state": {}}, events.get, send))
    assert await asyncio.wait_for(said.get(), 60) == "lifespan.startup.complete"
    try:
        yield
    finally:
        await events.put({"type": "lifespan.shutdown"})
        await running


async def test_a_request_the_server_stops_still_leaves_its_record(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """Past the grace the server cancels what is still running: the request is recorded (a
    503 of unknown cost, since the model was working on it), never lost from the ledger."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(primary, backup))
    app = create_app(Settings(policy_path=path, data_dir=tmp_path / "data", watch_policy=False))
    primary.script(Fault(delay_s=5))
    body = b'{"model": "main", "messages": [{"role": "user", "content": "slow"}]}'
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
        "headers": [
            (b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {TENANT_KEY}".encode()),
        ],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages, None) or await asyncio.Event().wait()  # the client stays

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with lifespan(app):
        task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        for _ in range(500):  # until the upstream has the request (a thread of its own)
            if primary.requests:
                break
            await asyncio.sleep(0.01)
        task.cancel()  # what uvicorn does to a request still running at the grace's end
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ledger = app.state.services.ledger
        await ledger.flush()
        (record,) = ledger.records()
        assert (record.status, record.tenant, record.cost_usd) == (503, "team-a", None)
