"""What the Batch API refuses, in OpenAI's error shape; tenants' files and batches kept apart;
cancelling; and the same run on the Redis store."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import OTHER_KEY, TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.batch.conftest import (
    batch_policy,
    chat_line,
    create,
    jsonl,
    results,
    run_batch,
    upload,
    wait,
)
from tests.servers import RedisProcess


def _error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


def _completed(client: openai.OpenAI, batch_id: str) -> int:
    counts = client.batches.retrieve(batch_id).request_counts
    return 0 if counts is None else counts.completed


def test_no_key_no_files_and_no_batches(batch_gateway: Gateway) -> None:
    for method, path in [
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/file-x/content"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches"),
        ("POST", "/v1/batches/batch_x/cancel"),
    ]:
        response = httpx.request(method, f"{batch_gateway.url}{path}")
        assert _error(response, 401)["type"] == "authentication_error"


def test_bad_uploads_and_batches_are_refused_in_openai_shape(batch_gateway: Gateway) -> None:
    client = batch_gateway.client()
    auth = {"authorization": f"Bearer {TENANT_KEY}"}
    url = batch_gateway.url
    wrong_purpose = httpx.post(
        f"{url}/v1/files", headers=auth, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "x"}
    )
    assert _error(wrong_purpose, 400)["param"] == "purpose"
    not_multipart = httpx.post(f"{url}/v1/files", headers=auth, json={"purpose": "batch"})
    assert _error(not_multipart, 400)["param"] == "file"
    framing = {**auth, "content-type": "multipart/form-data; boundary=b"}
    garbled = httpx.post(f"{url}/v1/files", headers=framing, content=b"--b\r\nx\ry: z\r\n\r\n")
    assert "malformed" in _error(garbled, 400)["message"]
    file_id = upload(client, [chat_line("a", "hi")])
    asked = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    for change, param in [
        ({"endpoint": "/v1/images"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
    ]:
        response = httpx.post(f"{url}/v1/batches", headers=auth, json={**asked, **change})
        assert _error(response, 400)["param"] == param
    json_type = {**auth, "content-type": "application/json"}
    broken = httpx.post(f"{url}/v1/batches", headers=json_type, content=b"{")
    assert _error(broken, 400)["param"] is None
    untyped = httpx.post(f"{url}/v1/batches", headers=auth, content=b"{}")
    assert _error(untyped, 415)["param"] == "content-type"
    assert (
        _error(httpx.get(f"{url}/v1/batches/batch_nope", headers=auth), 404)["code"] == "not_found"
    )
    assert _error(httpx.get(f"{url}/v1/files?limit=0", headers=auth), 400)["param"] == "limit"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")


def test_a_file_over_the_policys_limit_is_refused(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = batch_policy(primary, backup).replace("batch: {", "batch: {max_file_bytes: 2048, ")
    gateway = start_gateway(text)
    big = jsonl([chat_line(f"l{i}", "x" * 100) for i in range(40)])
    response = httpx.post(
        f"{gateway.url}/v1/files",
        headers={"authorization": f"Bearer {TENANT_KEY}"},
        files={"file": ("big.jsonl", big)},
        data={"purpose": "batch"},
    )
    assert _error(response, 413)["code"] == "request_too_large"
    assert gateway.client().files.list().data == []


def test_a_file_with_bad_lines_fails_the_batch_and_runs_nothing(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    client = batch_gateway.client()
    good = chat_line("a", "hi")
    raw = jsonl([good, {**good, "url": "/v1/embeddings"}, good]) + b"not json\n"
    file_id = client.files.create(file=("bad.jsonl", io.BytesIO(raw)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait(client, batch.id)

    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    found = [(e.code, e.line) for e in failed.errors.data]
    assert found == [("mismatched_url", 2), ("duplicate_custom_id", 3), ("invalid_json_line", 4)]
    assert primary.requests == []


def test_a_live_request_may_not_pose_as_a_batch_line(batch_gateway: Gateway) -> None:
    response = httpx.post(
        f"{batch_gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {TENANT_KEY}", "x-gateway-tags": "batch=batch_x"},
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert _error(response, 400)["param"] == "x-gateway-tags"


def test_another_tenant_sees_none_of_a_tenants_files_and_batches(batch_gateway: Gateway) -> None:
    mine, theirs = batch_gateway.client(TENANT_KEY), batch_gateway.client(OTHER_KEY)
    done = run_batch(mine, [chat_line("a", "secret question")], "/v1/chat/completions")
    assert done.batch.output_file_id is not None
    for file_id in (done.batch.input_file_id, done.batch.output_file_id):
        with pytest.raises(openai.NotFoundError):
            theirs.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            theirs.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            theirs.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(done.batch.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(done.batch.id)
    with pytest.raises(openai.BadRequestError):
        theirs.batches.create(
            input_file_id=done.batch.input_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert theirs.files.list().data == [] and theirs.batches.list().data == []
    assert {f.id for f in mine.files.list().data} == {
        done.batch.input_file_id,
        done.batch.output_file_id,
    }
    assert [b.id for b in mine.batches.list().data] == [done.batch.id]
    assert mine.files.delete(done.batch.output_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        mine.files.content(done.batch.output_file_id)


def test_a_cancelled_batch_stops_and_keeps_what_finished(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(batch_policy(primary, backup, concurrency=2))
    primary.script(*[Fault(delay_s=0.2)] * 200)
    client = gateway.client()
    batch = create(
        client, [chat_line(f"l{i}", f"q{i}") for i in range(200)], "/v1/chat/completions"
    )
    while _completed(client, batch.id) == 0:
        time.sleep(0.05)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = results(client, wait(client, batch.id))

    assert done.batch.status == "cancelled" and done.batch.cancelled_at is not None
    counts = done.batch.request_counts
    assert counts is not None and counts.total == 200
    assert 0 < len(primary.requests) < 200
    assert counts.completed == len(done.output) == len(primary.requests)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_the_redis_store_runs_a_batch_the_same(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    gateway = start_gateway(batch_policy(primary, backup), redis_url=own_redis.url)
    lines = [chat_line(f"r{i}", f"redis question {i}") for i in range(100)]
    done = run_batch(gateway.client(), lines, "/v1/chat/completions")

    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(f"r{i}" for i in range(100))
    assert len(primary.requests) == 100
    assert (gateway.data_dir / "batch" / "state.sqlite3").exists() is False


def test_a_batch_past_its_window_expires_with_what_finished(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """Its window is moved into the past in the store (as another replica's clock might see
    it): the lines never started go to the error file as batch_expired, none of them runs."""
    gateway = start_gateway(batch_policy(primary, backup, concurrency=1))
    primary.script(*[Fault(delay_s=0.2)] * 40)
    client = gateway.client()
    batch = create(client, [chat_line(f"l{i}", f"q{i}") for i in range(40)], "/v1/chat/completions")
    while _completed(client, batch.id) == 0:
        time.sleep(0.05)
    with sqlite3.connect(gateway.data_dir / "batch" / "state.sqlite3") as state:
        (value,) = state.execute(
            "SELECT value FROM batch_objects WHERE id = ?", (batch.id,)
        ).fetchone()
        stored = {**json.loads(value), "expires_at": int(time.time()) - 1}
        state.execute(
            "UPDATE batch_objects SET value = ? WHERE id = ?", (json.dumps(stored), batch.id)
        )
    done = results(client, wait(client, batch.id))

    assert done.batch.status == "expired" and done.batch.expired_at is not None
    assert sorted(done.custom_ids) == sorted(f"l{i}" for i in range(40))
    assert 0 < len(done.output) < 40
    assert {e["error"]["code"] for e in done.errors.values()} == {"batch_expired"}
    assert len(primary.requests) == len(done.output)
    assert done.batch.request_counts is not None
    assert (done.batch.request_counts.completed, done.batch.request_counts.failed) == (
        len(done.output),
        len(done.errors),
    )
