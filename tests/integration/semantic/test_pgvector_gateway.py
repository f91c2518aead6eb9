"""Two gateways sharing the pgvector index (``cache.semantic.index: pgvector``) and the ledger's
PostgreSQL, with the real embedding model and the shipped guard: what one stored, the other
serves; what means the opposite, neither does; a bad database stops the start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, policy_text
from tests.fake_upstream import FakeUpstream
from tests.integration.semantic.pgvector_db import rows, upgraded_database
from tests.postgres import SERVER, fresh_database

pytestmark = pytest.mark.model

QUESTION = "What is the capital city of France?"
PARAPHRASE = "Which city is the capital of France?"


@pytest.fixture
def database() -> Iterator[str]:
    with upgraded_database() as url:
        yield url


def shared_policy(primary: FakeUpstream, backup: FakeUpstream, namespace: str) -> str:
    return policy_text(primary, backup) + (
        f"cache:\n  namespace: {namespace}\n"
        "  semantic: {enabled: true, max_temperature: 0.5, index: pgvector, threshold: 0.6}\n"
    )


def ask(gateway: Gateway, text: str) -> httpx.Response:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], temperature=0
    )
    return raw.http_response  # type: ignore[return-value]  # the openai SDK vendors httpx


def wait_rows(url: str, count: int, timeout_s: float = 10.0) -> None:
    """Answers are stored after the response, in the background."""
    deadline = time.monotonic() + timeout_s
    while rows(url) < count:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.02)


def test_one_gateway_stores_the_other_serves_and_the_guard_still_vetoes(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    database: str,
) -> None:
    policy = shared_policy(primary, backup, f"t-{uuid.uuid4().hex[:8]}")
    first = start_gateway(policy, ledger_url=database)
    second = start_gateway(policy, ledger_url=database)
    assert ask(first, QUESTION).headers["x-gateway-cache"] == "miss"
    wait_rows(database, 1)
    hit = ask(second, PARAPHRASE)
    assert hit.headers["x-gateway-cache"] == "semantic", hit.headers
    assert hit.json()["choices"][0]["message"]["content"] == f"primary says: {QUESTION}"
    assert len(primary.requests) == 1
    ask(first, "How do I turn on dark mode in Slack?")
    wait_rows(database, 2)
    opposite = ask(second, "How do I turn off dark mode in Slack?")
    assert opposite.headers["x-gateway-cache"] == "miss"
    assert second.app.state.services.semantic.health()["guard_veto_opposite"] == 1
    ready = httpx.get(f"{second.url}/readyz").json()
    assert ready["status"] == "ready", ready


@pytest.mark.parametrize(
    ("database_name", "says"),
    [
        (None, "has no semantic.entries table: install pgvector on the server, then run"),
        ("gw_test_no_such_database", "cannot be reached"),
    ],
    ids=["no-table", "no-database"],
)
def test_serve_stops_at_start_on_a_database_that_cannot_be_used(
    tmp_path: Path,
    models_dir: Path,
    primary: FakeUpstream,
    backup: FakeUpstream,
    database_name: str | None,
    says: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(shared_policy(primary, backup, "t"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
    with fresh_database() as bare:
        url = bare if database_name is None else f"{SERVER}/{database_name}"
        env = {**os.environ, "GATEWAY_LEDGER_URL": url, "GATEWAY_DATA_DIR": str(data_dir)}
        env.pop("GATEWAY_REDIS_URL", None)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--policy", str(policy), "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode != 0
    assert "cache.semantic.index: pgvector at postgresql://" in done.stderr, done.stderr[-3000:]
    assert "(GATEWAY_LEDGER_URL)" in done.stderr and says in done.stderr
