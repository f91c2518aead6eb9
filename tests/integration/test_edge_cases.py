"""Hardening: odd client input and upstream edge cases, each a 4xx/5xx of OpenAI's shape with
its ledger record, never a crash."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.ledger.record import LedgerRecord
from gateway.policy.load import PolicyError
from gateway.runtime.store import PolicyStore
from gateway.settings import Settings
from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.test_faults import assert_openai_error, post
from tests.servers import ServerThread

MESSAGES = [{"role": "user", "content": "hello there"}]
AUTH = {"authorization": f"Bearer {TENANT_KEY}"}
BASE = '{"model": "auto", "messages": [{"role": "user", "content": "x"}]'


def record_of(gateway: Gateway, response: httpx.Response, count: int = 1) -> LedgerRecord:
    request_id = response.headers["x-gateway-request-id"]
    records = [r for r in gateway.records(count) if r.request_id == request_id]
    assert records, f"no ledger record for {request_id}"
    return records[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", '"hot"'),
        ("temperature", "true"),
        ("top_p", '"high"'),
        ("frequency_penalty", "[]"),
        ("presence_penalty", "{}"),
        ("n", '"2"'),
        ("n", "1.5"),
        ("max_tokens", '"100"'),
        ("max_completion_tokens", "12.5"),
        ("seed", '"7"'),
        ("logprobs", '"yes"'),
    ],
)
def test_a_wrongly_typed_parameter_the_gateway_reads_is_a_400_naming_it(
    gateway: Gateway, primary: FakeUpstream, field: str, value: str
) -> None:
    response = post(gateway, BASE + f', "{field}": {value}}}')
    error = assert_openai_error(response, 400, param=field)
    assert error["type"] == "invalid_request_error"
    assert primary.requests == []
    record = record_of(gateway, response)
    assert record.status == 400 and record.tenant == "team-a"


def test_the_sdk_sees_a_bad_temperature_as_bad_request(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(
            model="auto",
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature="hot",  # type: ignore[arg-type]
        )
    assert info.value.param == "temperature"


def test_numbers_of_the_right_type_still_pass(gateway: Gateway, primary: FakeUpstream) -> None:
    response = post(
        gateway,
        BASE + ', "temperature": 0, "top_p": 1, "n": 1, "max_tokens": 20, "seed": 3, '
        '"logprobs": false, "frequency_penalty": 0.5}',
    )
    assert response.status_code == 200, response.text
    assert primary.requests[-1].body["temperature"] == 0  # forwarded as sent


@pytest.mark.parametrize(("depth", "param"), [(65, "deep"), (900, "deep"), (100_000, None)])
def test_deeply_nested_json_is_a_400(
    gateway: Gateway, primary: FakeUpstream, depth: int, param: str | None
) -> None:
    # ``depth`` levels of arrays under a field (the body itself is one more level)
    response = post(gateway, BASE + ', "deep": ' + "[" * depth + "]" * depth + "}")
    error = assert_openai_error(response, 400, param=param)
    assert "nested" in str(error["message"])
    assert primary.requests == []
    assert record_of(gateway, response).status == 400


def test_nesting_up_to_the_limit_passes(gateway: Gateway, primary: FakeUpstream) -> None:
    response = post(gateway, BASE + ', "deep": ' + "[" * 63 + "]" * 63 + "}")
    assert response.status_code == 200, response.text


def test_an_overlong_sse_line_before_the_first_chunk_falls_back(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(long_line_after_chunks=0))
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        assert response.headers["x-gateway-model"] == "backup"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        request_id = response.headers["x-gateway-request-id"]
    assert text == "backup says: hello there"
    assert len(primary.requests) == 1  # a protocol failure: not retried, the fallback answers
    record = next(r for r in gateway.records(1) if r.request_id == request_id)
    assert record.model == "backup" and record.status == 200


def test_an_overlong_sse_line_after_the_first_chunk_ends_with_the_error_event(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(long_line_after_chunks=2))
    body = BASE.replace('"x"', '"a b c d"') + ', "stream": true}'
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
        request_id = response.headers["x-gateway-request-id"]
    assert len(events) == 3  # two chunks, then the error
    assert '"code":"upstream_stream_broken"' in events[-1]
    assert "xxxx" not in events[-1]  # the upstream's data is not quoted
    assert backup.requests == []
    record = next(r for r in gateway.records(1) if r.request_id == request_id)
    assert record.model == "main" and record.stream
    with pytest.raises(openai.APIError):  # the SDK raises on the error event
        primary.script(Fault(long_line_after_chunks=1))
        for _ in gateway.client().chat.completions.create(
            model="auto",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ):
            pass


def test_a_non_streamed_answer_slower_than_first_token_s_is_waited_for(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """``first_token_s`` bounds a stream's first chunk; a non-streamed answer's head comes only
    when generation ends, so only ``total_s`` (20 s here) bounds it."""
    gw = start_gateway(policy_text(primary, backup, first_token_s=0.3))
    primary.script(Fault(delay_s=1.0))
    started = time.monotonic()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="auto",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert time.monotonic() - started >= 1.0
    assert raw.headers["x-gateway-model"] == "main"
    assert len(primary.requests) == 1 and backup.requests == []
    # A stream as slow to start still times out and falls back.
    primary.script(*[Fault(delay_s=1.0)] * 3)
    with gw.client().chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": "a new question"}],
        stream=True,
    ) as response:
        assert response.headers["x-gateway-model"] == "backup"


def test_a_non_streamed_answer_is_still_bounded_by_total_s(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = policy_text(primary, backup).replace("total_s: 20", "total_s: 0.5")
    gw = start_gateway(text)
    primary.script(*[Fault(delay_s=1.0)] * 3)
    backup.script(*[Fault(delay_s=1.0)] * 2)
    response = post(gw, BASE + "}")
    assert_openai_error(response, 504, code="upstream_timeout")


def test_attempts_give_short_reasons_and_the_upstream_text_goes_to_the_log(
    gateway: Gateway,
    primary: FakeUpstream,
    backup: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    leaky = (
        b'{"error": {"message": "Incorrect API key provided: sk-ups***cret", '
        b'"type": "invalid_request_error", "code": "invalid_api_key"}}'
    )
    primary.script(Fault(status=401, body=leaky))
    backup.script(*[Fault(status=500, body=b"<html>backend sk-upstream-secret</html>")] * 2)
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.call"):
        response = post(gateway, BASE + "}")
    error = assert_openai_error(response, 502, code="upstream_error")
    assert "sk-ups" not in response.text and "<html>" not in response.text
    attempts = error["attempts"]
    assert isinstance(attempts, list)
    assert [(a["model"], a["kind"], a["status"], a["error"]) for a in attempts] == [
        ("main", "status", 401, "HTTP 401"),
        ("backup", "status", 500, "HTTP 500"),
        ("backup", "status", 500, "HTTP 500"),
    ]
    assert all(a["elapsed_ms"] >= 0 for a in attempts)
    request_id = response.headers["x-gateway-request-id"]
    ours = [r for r in caplog.records if request_id in r.getMessage()]
    assert [r.levelno for r in ours] == [logging.WARNING] * 3
    logged = [r.getMessage() for r in ours]
    assert "sk-ups***cret" in logged[0] and "<html>backend" in logged[1]
    assert record_of(gateway, response).status == 502


def test_attempt_kinds_for_timeouts_and_unreachable_upstreams(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = policy_text(primary, backup, first_token_s=0.2).replace(
        backup.base_url, "http://127.0.0.1:9/v1"
    )
    gw = start_gateway(text)
    primary.script(*[Fault(delay_s=0.6)] * 3)
    body = BASE + ', "stream": true}'
    response = post(gw, body)
    error = assert_openai_error(response, 503, code="upstream_unavailable")
    attempts = error["attempts"]
    assert isinstance(attempts, list)
    kinds = [(a["model"], a["kind"], a["error"]) for a in attempts]
    assert kinds[0] == ("main", "timeout", "timed out")
    assert kinds[-1] == ("backup", "connect", "could not connect")
    assert "127.0.0.1:9" not in response.text


def test_admin_policy_redacts_secret_headers_and_url_credentials(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    # The fake upstream ignores credentials; the gateway must not show them.
    text = policy_text(primary, backup).replace(
        f"base_url: {backup.base_url}",
        f"base_url: {backup.base_url.replace('http://', 'http://svc:hunter2@')}?key=gkey-123"
        "&api-version=2024-06-01\n"
        "    headers: {api-key: azure-secret-1, x-api-key: xk-secret-2, "
        "Authorization: Bearer tok-secret-3, anthropic-version: '2023-06-01'}",
    )
    gw = start_gateway(text)
    shown = httpx.get(f"{gw.url}/admin/policy", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert shown.status_code == 200, shown.text
    for secret in ("hunter2", "svc:", "gkey-123", "azure-secret-1", "xk-secret-2", "tok-secret-3"):
        assert secret not in shown.text
    assert "sk-upstream-secret" not in shown.text and TENANT_KEY not in shown.text
    backup_model = shown.json()["policy"]["models"]["backup"]
    assert backup_model["headers"] == {
        "api-key": "[redacted]",
        "x-api-key": "[redacted]",
        "Authorization": "[redacted]",
        "anthropic-version": "2023-06-01",  # not a secret: shown
    }
    host = backup.base_url.removeprefix("http://")
    assert backup_model["base_url"] == (
        f"http://[redacted]@{host}?key=[redacted]&api-version=2024-06-01"
    )


def test_readyz_details_need_the_admin_key(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), redis_url="redis://127.0.0.1:9/0")
    assert post(gw, BASE + "}").headers["x-gateway-cache"] == "bypass"  # Redis is noticed
    deadline = time.monotonic() + 5
    while (anonymous := httpx.get(f"{gw.url}/readyz")).json()["status"] != "degraded":
        assert time.monotonic() < deadline, anonymous.text
        time.sleep(0.05)
    assert anonymous.status_code == 200
    assert anonymous.json()["stores"]["exact_cache"] == "degraded"
    assert set(anonymous.json()) == {"status", "stores"}
    assert set(anonymous.json()["stores"]) == {"exact_cache", "ledger"}
    assert all(isinstance(state, str) for state in anonymous.json()["stores"].values())
    assert "policy" not in anonymous.json() and str(gw.policy_path) not in anonymous.text
    admin = httpx.get(f"{gw.url}/readyz", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.json()["policy"]["path"] == str(gw.policy_path)
    assert admin.json()["stores"]["ledger"]["ledger"] == "redis"  # the details, for the admin


def admin_key_settings(tmp_path: Path, text: str, admin_key: str) -> Settings:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return Settings(policy_path=path, data_dir=tmp_path / "data", admin_key=admin_key)


def without_admin_block(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith("admin:"))


@pytest.mark.parametrize(
    ("admin_key", "message"),
    [
        ("sk-short-admin", "GATEWAY_ADMIN_KEY is shorter than 16 characters"),
        (TENANT_KEY, "GATEWAY_ADMIN_KEY is also a tenant's key"),
    ],
)
async def test_a_weak_gateway_admin_key_is_refused_at_start(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream, admin_key: str, message: str
) -> None:
    text = without_admin_block(policy_text(primary, backup))
    store = PolicyStore(admin_key_settings(tmp_path, text, admin_key))
    try:
        with pytest.raises(PolicyError) as info:
            await store.start()
        assert [p.message for p in info.value.problems] == [message]
        assert admin_key not in str(info.value)
    finally:
        await store.aclose()


async def test_an_admin_key_of_the_policy_shared_with_a_tenant_is_refused(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = policy_text(primary, backup).replace(ADMIN_KEY, TENANT_KEY)
    store = PolicyStore(admin_key_settings(tmp_path, text, ADMIN_KEY))
    try:
        with pytest.raises(PolicyError) as info:
            await store.start()
        assert "$.admin.api_keys[0]: the admin key is also a tenant's key" in str(info.value)
    finally:
        await store.aclose()


def test_a_reload_that_makes_the_admin_key_a_tenants_key_is_refused(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = without_admin_block(policy_text(primary, backup))
    settings = admin_key_settings(tmp_path, text, ADMIN_KEY)
    settings.data_dir.mkdir()
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with ServerThread(create_app(settings)) as server:
        before = httpx.get(f"{server.url}/readyz", headers=admin).json()["policy"]["version"]
        settings.policy_path.write_text(text.replace(TENANT_KEY, ADMIN_KEY))
        response = httpx.post(f"{server.url}/admin/policy/reload", headers=admin)
        error = assert_openai_error(response, 400, code="invalid_policy")
        assert any("GATEWAY_ADMIN_KEY is also a tenant's key" in p for p in error["problems"])  # type: ignore[attr-defined]
        assert ADMIN_KEY not in response.text
        after = httpx.get(f"{server.url}/readyz", headers=admin).json()["policy"]["version"]
        assert after == before
