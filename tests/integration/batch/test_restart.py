"""A gateway stopped mid-batch and started again finishes the batch: no line runs twice (the
fake upstream counts each prompt it is asked) and none is lost.

``gateway serve`` runs in a child process, stopped with SIGTERM (its lines in flight finish
within the shutdown grace, so every line comes back answered) or killed with SIGKILL (a line
cut off mid-call is reported as interrupted, never run again, since the upstream may have
answered it). The first uses the embedded SQLite store, the second Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

from tests.conftest import TENANT_KEY
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.batch.conftest import batch_policy, chat_line, create, results, wait
from tests.servers import RedisProcess, free_port

LINES = 240
CONCURRENCY = 4


def _serve(
    policy: Path, data_dir: Path, redis_url: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_REDIS_URL": redis_url or "",
        "GATEWAY_SHUTDOWN_GRACE_S": "20",
    }
    command = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--policy",
        str(policy),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, "the gateway exited during start-up"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.1)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TENANT_KEY, max_retries=0, timeout=30)


def _stopped_mid_batch(
    tmp_path: Path,
    primary: FakeUpstream,
    backup: FakeUpstream,
    how: signal.Signals,
    redis_url: str | None,
) -> tuple[dict[str, int], set[str], dict[str, str]]:
    """Run a batch, stop the gateway part way with ``how``, start it again on the same data
    dir and store, and wait for the batch: how often each prompt reached the upstream, the
    custom_ids answered, and the error code of each custom_id in the error file."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(batch_policy(primary, backup, concurrency=CONCURRENCY))
    primary.script(*[Fault(delay_s=0.05)] * (2 * LINES))
    first, url = _serve(policy, tmp_path / "data", redis_url)
    try:
        client = _client(url)
        lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(LINES)]
        batch = create(client, lines, "/v1/chat/completions")
        while len(primary.requests) < LINES // 4:
            time.sleep(0.02)
        first.send_signal(how)
        first.wait(timeout=60)
    finally:
        first.kill()
    asked_before = len(primary.requests)
    assert asked_before < LINES, "the batch ended before the gateway was stopped"
    second, url = _serve(policy, tmp_path / "data", redis_url)
    try:
        with _client(url) as client:
            done = results(client, wait(client, batch.id, timeout_s=120))
    finally:
        second.terminate()
        second.wait(timeout=60)
    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(f"line-{i}" for i in range(LINES))
    asked = Counter(r.body["messages"][0]["content"] for r in primary.requests)
    codes = {cid: entry["error"]["code"] for cid, entry in done.errors.items()}
    return dict(asked), set(done.output), codes


def test_a_batch_stopped_with_sigterm_finishes_every_line_once(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    asked, answered, errors = _stopped_mid_batch(tmp_path, primary, backup, signal.SIGTERM, None)

    assert errors == {}
    assert answered == {f"line-{i}" for i in range(LINES)}
    assert asked == {f"prompt {i}": 1 for i in range(LINES)}


def test_a_batch_killed_with_sigkill_runs_no_line_twice(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream, own_redis: RedisProcess
) -> None:
    asked, answered, errors = _stopped_mid_batch(
        tmp_path, primary, backup, signal.SIGKILL, own_redis.url
    )

    assert max(asked.values()) == 1
    assert set(errors.values()) <= {"line_interrupted"}
    assert 1 <= len(errors) <= CONCURRENCY  # lines are always in flight: some were cut off
    assert answered | set(errors) == {f"line-{i}" for i in range(LINES)}
    assert {f"prompt {cid.removeprefix('line-')}" for cid in answered} <= set(asked)
