"""A gateway stopped while its lines wait on an upstream batch, and started again, finishes the
batch from that same upstream batch: it is never submitted again (the fake counts submissions
and the lines in them), and every line comes back once with its answer.

Killed (SIGKILL; OpenAI on the Redis store, Bedrock on SQLite) after the upstream batch was
submitted: the restarted replica takes the dead one's lines over and polls the stored job.
Stopped (SIGTERM, SQLite store) while the lines were still being collected: the stopping
replica sends them first, and the restarted one polls what it sent.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_batch_upstream import FakeBatches
from tests.fake_upstream import FakeUpstream
from tests.integration.batch.conftest import chat_line, create, results, wait
from tests.integration.batch.test_restart import _client, _serve
from tests.integration.batch.upstream import upstream_policy
from tests.servers import RedisProcess, module_fixtures

_fake_batches, fake_batches = module_fixtures("fake_batches", FakeBatches)
LINES = 30


def _until(condition: str, check: Callable[[], object]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, condition
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("how", "store", "api"),
    [
        (signal.SIGKILL, "redis", "openai"),
        (signal.SIGKILL, "sqlite", "bedrock"),
        (signal.SIGTERM, "sqlite", "openai"),
    ],
)
def test_a_stopped_gateway_resumes_its_upstream_batch_without_sending_it_again(
    tmp_path: Path,
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
    own_redis: RedisProcess,
    how: signal.Signals,
    store: str,
    api: str,
) -> None:
    redis_url = own_redis.url if store == "redis" else None
    # Killed: sent at once, then held upstream. Stopped: still collecting when stopped.
    flush_s = 0.3 if how == signal.SIGKILL else 60.0
    policy = tmp_path / "policy.yaml"
    policy.write_text(upstream_policy(primary, backup, fake_batches, api, flush_s=flush_s))
    fake_batches.hold = True
    first, url = _serve(policy, tmp_path / "data", redis_url)
    try:
        client = _client(url)
        lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(LINES)]
        batch = create(client, lines, "/v1/chat/completions")
        if how == signal.SIGKILL:
            _until("nothing was sent upstream", lambda: fake_batches.requests)
            time.sleep(0.5)  # the job's upstream id stored
        else:
            _until(
                "the batch did not start",
                lambda: client.batches.retrieve(batch.id).status == "in_progress",
            )
            time.sleep(2.0)  # every line joined the group
            assert fake_batches.requests == []
        first.send_signal(how)
        first.wait(timeout=60)
    finally:
        first.kill()
    assert len(fake_batches.requests) == 1
    fake_batches.hold = False
    second, url = _serve(policy, tmp_path / "data", redis_url)
    try:
        with _client(url) as client:
            done = results(client, wait(client, batch.id, timeout_s=120))
    finally:
        second.terminate()
        second.wait(timeout=60)

    assert len(fake_batches.requests) == 1
    assert Counter(fake_batches.prompts()) == {f"prompt {i}": 1 for i in range(LINES)}
    assert done.batch.status == "completed"
    assert done.errors == {}
    assert sorted(done.custom_ids) == sorted(f"line-{i}" for i in range(LINES))
    for i in range(LINES):
        body = done.output[f"line-{i}"]["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"batchy says: prompt {i}"
    assert primary.requests == []
