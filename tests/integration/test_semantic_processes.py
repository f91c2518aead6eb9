"""Two real gateway processes sharing one Redis: one's semantic entries serve the other within
a second, and a restarted gateway rebuilds its index from Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TENANT_KEY
from tests.fake_upstream import FakeUpstream
from tests.integration.test_semantic_gateway import (
    PARAPHRASE,
    QUESTION,
    REDIS_URL,
    semantic_policy,
)
from tests.servers import free_port

pytestmark = pytest.mark.model


class GatewayProcess:
    """``gateway serve`` in a child process."""

    def __init__(self, policy: Path, data_dir: Path, models_dir: Path) -> None:
        self.policy, self.data_dir = policy, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models").exists():
            (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        env = {**os.environ, "GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_DATA_DIR": str(self.data_dir)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--policy",
                str(self.policy),
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, "the gateway exited during start-up"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def ask(self, text: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {TENANT_KEY}"},
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": text}],
                "temperature": 0,
            },
            timeout=30,
        )


@pytest.fixture
def processes(
    tmp_path: Path, models_dir: Path, primary: FakeUpstream, backup: FakeUpstream
) -> Iterator[list[GatewayProcess]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(semantic_policy(primary, backup))
    started = [GatewayProcess(policy, tmp_path / f"data-{i}", models_dir) for i in range(2)]
    yield started
    if started[0].process is not None and started[0].process.poll() is None:
        httpx.delete(
            f"{started[0].url}/admin/cache", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
    for process in started:
        process.stop()


def test_a_second_process_serves_the_first_ones_entry_and_a_restart_rebuilds(
    processes: list[GatewayProcess], primary: FakeUpstream
) -> None:
    first, second = (p.start() for p in processes)
    assert first.ask(QUESTION).headers["x-gateway-cache"] == "miss"
    stored = time.monotonic()
    while True:  # stored after the response, then announced through the Redis stream
        response = second.ask(PARAPHRASE)
        if response.headers["x-gateway-cache"] == "semantic":
            break
        assert time.monotonic() - stored < 1.5, "the second process never saw the entry"
        time.sleep(0.05)
    assert response.json()["choices"][0]["message"]["content"] == f"primary says: {QUESTION}"

    first.stop()
    restarted = first.start()  # an empty index, rebuilt from Redis at start
    response = restarted.ask(PARAPHRASE)
    assert response.headers["x-gateway-cache"] == "semantic"
    assert len(primary.requests) == 1
