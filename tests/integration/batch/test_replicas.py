"""Two replicas on one Redis and one files volume share a batch: each line runs once, on one
of them. The replicas' policies send ``main`` to different fake upstreams, so each answer
tells which replica ran its line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.batch.conftest import batch_policy, chat_line, create, results, wait
from tests.servers import RedisProcess

LINES = 200


def test_two_replicas_share_a_batch_and_run_each_line_once(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    first = start_gateway(batch_policy(primary, backup, concurrency=4), redis_url=own_redis.url)
    second = start_gateway(batch_policy(backup, primary, concurrency=4), redis_url=own_redis.url)
    (second.data_dir / "batch").symlink_to(first.data_dir / "batch", target_is_directory=True)
    primary.script(*[Fault(delay_s=0.02)] * LINES)
    backup.script(*[Fault(delay_s=0.02)] * LINES)
    lines = [chat_line(f"line-{i}", f"shared {i}") for i in range(LINES)]
    batch = create(first.client(), lines, "/v1/chat/completions")
    done = results(second.client(), wait(second.client(), batch.id))

    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(f"line-{i}" for i in range(LINES))
    asked = Counter(r.body["messages"][0]["content"] for r in [*primary.requests, *backup.requests])
    assert asked == {f"shared {i}": 1 for i in range(LINES)}
    by = Counter(
        entry["response"]["body"]["choices"][0]["message"]["content"].split(" says:")[0]
        for entry in done.output.values()
    )
    assert set(by) == {"primary", "backup"}  # both replicas ran lines of it


def test_a_replica_without_the_file_leaves_the_batch_to_one_with_it(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    """The second replica's disk has no files: it neither fails the batch nor runs it."""
    first = start_gateway(batch_policy(primary, backup, concurrency=2), redis_url=own_redis.url)
    second = start_gateway(batch_policy(backup, primary, concurrency=2), redis_url=own_redis.url)
    primary.script(*[Fault(delay_s=0.05)] * 50)  # long enough for the second replica to look
    lines = [chat_line(f"line-{i}", f"alone {i}") for i in range(50)]
    done = results(
        first.client(),
        wait(first.client(), create(first.client(), lines, "/v1/chat/completions").id),
    )

    assert done.batch.status == "completed"
    assert len(done.output) == 50 and backup.requests == []
    assert second.client().batches.retrieve(done.batch.id).status == "completed"
