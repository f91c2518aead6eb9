"""Bad input and upstream faults: OpenAI-shaped errors, retries, fallbacks, broken streams."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault

MESSAGES = [{"role": "user", "content": "hello there"}]
AUTH = {"authorization": f"Bearer {TENANT_KEY}"}
JSON_AUTH = {**AUTH, "content-type": "application/json"}


def post(
    gateway: Gateway, content: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=content,
        headers={**JSON_AUTH, **(headers or {})},
    )


def assert_openai_error(
    response: httpx.Response, status: int, *, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "auto"}', "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "auto", "messages": "hello"}', "messages"),
        (b'{"model": "auto", "messages": []}', "messages"),
        (
            b'{"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
        ),
    ],
)
def test_malformed_requests_are_400(
    gateway: Gateway, primary: FakeUpstream, body: bytes, param: str | None
) -> None:
    error = assert_openai_error(post(gateway, body), 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert primary.requests == []


def test_missing_and_wrong_keys_are_401(gateway: Gateway) -> None:
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}'
    assert_openai_error(httpx.post(f"{gateway.url}/v1/chat/completions", content=body), 401)
    assert_openai_error(
        post(gateway, body, {"authorization": "Bearer sk-wrong-key-000000000000"}),
        401,
        code="invalid_api_key",
    )
    assert_openai_error(post(gateway, body, {"authorization": "Basic abc"}), 401)
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-wrong-key-000000000000").chat.completions.create(
            model="auto", messages=MESSAGES
        )  # type: ignore[arg-type]
    assert (
        gateway.client(OTHER_KEY).chat.completions.create(model="auto", messages=MESSAGES).choices
    )  # type: ignore[arg-type]


def test_body_over_the_limit_is_413(gateway: Gateway, primary: FakeUpstream) -> None:
    huge = '{"model": "auto", "messages": [{"role": "user", "content": "' + "x" * (5 << 20) + '"}]}'
    assert_openai_error(post(gateway, huge), 413, code="request_too_large")

    def chunked():  # no content-length: the limit applies while reading
        yield huge.encode()[: 3 << 20]
        yield huge.encode()[3 << 20 :]

    assert_openai_error(post(gateway, chunked()), 413)  # type: ignore[arg-type]
    assert primary.requests == []


def test_unknown_path_and_method_use_the_same_shape(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nothing-here"), 404)
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions", headers=AUTH), 405)


def test_upstream_client_error_is_passed_on_without_retry_or_fallback(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(status=400))
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "injected_400"
    assert len(primary.requests) == 1 and backup.requests == []


def test_5xx_is_retried_on_the_same_model(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(status=500), Fault(status=502))
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )  # type: ignore[arg-type]
    assert raw.headers["x-gateway-model"] == "main"
    assert len(primary.requests) == 3 and backup.requests == []


def test_retry_after_is_honoured(gateway: Gateway, primary: FakeUpstream) -> None:
    primary.script(Fault(status=429, retry_after="1"))
    started = time.monotonic()
    gateway.client().chat.completions.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 1.0
    assert len(primary.requests) == 2


def test_fallback_after_retries_are_spent(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(*[Fault(status=503)] * 3)
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )  # type: ignore[arg-type]
    assert raw.headers["x-gateway-model"] == "backup"
    assert raw.headers["x-gateway-route"] == "default"
    assert raw.parse().choices[0].message.content == "backup says: hello there"
    assert backup.requests[-1].body["model"] == "upstream-backup"


def test_auth_failure_upstream_falls_back_at_once(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(status=401))
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )  # type: ignore[arg-type]
    assert raw.headers["x-gateway-model"] == "backup"
    assert len(primary.requests) == 1


def test_all_attempts_failing_gives_one_error_listing_each(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(*[Fault(status=500)] * 3)
    backup.script(Fault(status=500), Fault(status=503, retry_after="2"))
    response = post(gateway, b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}')
    error = assert_openai_error(response, 503, code="upstream_unavailable")
    attempts = error["attempts"]
    assert isinstance(attempts, list)
    assert [(a["model"], a["status"]) for a in attempts] == [
        ("main", 500),
        ("main", 500),
        ("main", 500),
        ("backup", 500),
        ("backup", 503),
    ]
    assert response.headers["retry-after"] == "2"
    assert response.headers["x-gateway-request-id"].startswith("req_")


def test_unreachable_upstream_falls_back(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = policy_text(primary, backup).replace(primary.base_url, "http://127.0.0.1:9/v1")
    raw = (
        start_gateway(text)
        .client()
        .chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    )  # type: ignore[arg-type]
    assert raw.headers["x-gateway-model"] == "backup"


def test_slow_first_token_times_out_and_falls_back(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, first_token_s=0.3))
    primary.script(*[Fault(delay_s=1.0)] * 3)
    with gw.client().chat.completions.with_streaming_response.create(
        model="auto", messages=MESSAGES, stream=True
    ) as response:  # type: ignore[arg-type]
        assert response.headers["x-gateway-model"] == "backup"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "backup says: hello there"


def test_every_attempt_timing_out_is_504(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, first_token_s=0.2))
    primary.script(*[Fault(delay_s=0.6)] * 3)
    backup.script(*[Fault(delay_s=0.6)] * 2)
    # first_token_s bounds streams; a non-streamed answer only total_s (test_edge_cases)
    response = post(
        gw, b'{"model": "auto", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
    )
    assert_openai_error(response, 504, code="upstream_timeout")


def test_stream_dropped_mid_way_ends_with_an_error_event(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    primary.script(Fault(drop_after_chunks=2))
    body = (
        b'{"model": "auto", "stream": true, "messages": [{"role": "user", "content": "a b c d"}]}'
    )
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", content=body, headers=JSON_AUTH, timeout=10
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert len(events) == 3  # two chunks, then the error
    assert '"code":"upstream_stream_broken"' in events[-1]
    assert "[DONE]" not in events[-1]
    with pytest.raises(openai.APIError):
        primary.script(Fault(drop_after_chunks=1))
        for _ in gateway.client().chat.completions.create(
            model="auto", messages=MESSAGES, stream=True
        ):  # type: ignore[arg-type]
            pass


def test_garbled_upstream_body_is_an_upstream_error(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(*[Fault(status=500, body=b"<html>oops</html>")] * 3)
    backup.script(*[Fault(status=500, body=b"")] * 2)
    response = post(gateway, b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}')
    error = assert_openai_error(response, 502, code="upstream_error")
    assert "HTTP 500" in str(error["message"])
    assert "oops" not in response.text  # the upstream's text is logged, not returned


def test_stream_stalling_mid_way_ends_with_an_error_event(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, first_token_s=0.3))
    primary.script(Fault(chunk_delay_s=2.0))
    body = b'{"model": "auto", "stream": true, "messages": [{"role": "user", "content": "a b"}]}'
    started = time.monotonic()
    with httpx.stream(
        "POST", f"{gw.url}/v1/chat/completions", content=body, headers=JSON_AUTH, timeout=10
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert time.monotonic() - started < 1.5
    assert len(events) == 2
    assert '"code":"upstream_stream_broken"' in events[-1] and "timed out" in events[-1]
    assert backup.requests == []  # the stream had started: no fallback


def test_client_leaving_a_stream_closes_the_upstream_stream(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    # One connection in the pool: a leaked upstream stream would starve the next request.
    gw = start_gateway(
        policy_text(primary, backup).replace(
            "model: upstream-main", "model: upstream-main\n    max_connections: 1"
        )
    )
    body = (
        b'{"model": "auto", "stream": true, "messages": [{"role": "user", "content": "'
        + b" ".join([b"word"] * 30)
        + b'"}]}'
    )
    for left in range(1, 4):
        primary.script(Fault(chunk_delay_s=0.2))
        with httpx.stream(
            "POST", f"{gw.url}/v1/chat/completions", content=body, headers=JSON_AUTH, timeout=10
        ) as response:
            next(response.iter_lines())
        deadline = time.monotonic() + 5
        while primary.disconnects < left:
            assert time.monotonic() < deadline, "the upstream stream was left open"
            time.sleep(0.05)
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-gateway-model"] == "main"
