"""Chat completions through the running gateway with the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


def test_non_streamed_completion_is_passed_through_with_gateway_headers(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "primary says: hello there"
    assert completion.usage is not None and completion.usage.prompt_tokens == 4
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-model"] == "main"
    assert raw.headers["x-gateway-route"] == "default"
    assert raw.headers["x-gateway-request-id"].startswith("req_")
    # 4 prompt tokens at $2.50/M and 4 completion tokens at $10/M
    assert raw.headers["x-gateway-cost-usd"] == "0.00005"
    sent = primary.requests[-1]
    assert sent.body["model"] == "upstream-main"
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"


def test_streamed_completion_with_usage(gateway: Gateway) -> None:
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["x-gateway-cache"] == "miss"
        assert response.headers["x-gateway-model"] == "main"
        assert response.headers["x-gateway-route"] == "default"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "primary says: hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_forced_model_and_unknown_fields_pass_through(
    gateway: Gateway, backup: FakeUpstream
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="backup",
        messages=MESSAGES,
        temperature=0.2,
        extra_body={"vendor_knob": {"depth": 3}, "seed": 7},
    )
    assert raw.headers["x-gateway-route"] == "forced"
    assert raw.headers["x-gateway-model"] == "backup"
    sent = backup.requests[-1].body
    assert sent["vendor_knob"] == {"depth": 3}
    assert sent["seed"] == 7 and sent["temperature"] == 0.2
    assert sent["model"] == "upstream-backup"


def test_models_lists_auto_and_policy_models(gateway: Gateway) -> None:
    ids = [m.id for m in gateway.client().models.list()]
    assert ids == ["auto", "main", "backup"]


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")  # anyone: the status and the stores' states
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "stores": {"exact_cache": "memory", "ledger": "sqlite"},
    }
    assert str(gateway.policy_path) not in ready.text
    for wrong in (TENANT_KEY, "sk-not-the-admin-key-000000"):
        shown = httpx.get(f"{gateway.url}/readyz", headers={"authorization": f"Bearer {wrong}"})
        assert shown.json() == ready.json()
    admin = httpx.get(f"{gateway.url}/readyz", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.json()["status"] == "ready"
    assert admin.json()["policy"]["path"] == str(gateway.policy_path)
    assert admin.json()["stores"]["ledger"]["ledger"] == "sqlite"


def test_tags_select_a_route(start_gateway, primary: FakeUpstream, backup: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import policy_text

    gw = start_gateway(
        policy_text(
            primary,
            backup,
            extra_routes="- {name: batch-jobs, when: {tags: {kind: batch}}, to: backup}\n",
        )
    )
    raw = gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers={"x-gateway-tags": "kind=batch, team=x"}
    )
    assert raw.headers["x-gateway-route"] == "batch-jobs"
    assert raw.parse().choices[0].message.content.startswith("backup says")
    plain = gw.client().chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert plain.headers["x-gateway-route"] == "default"


def test_tenant_rule(start_gateway, primary: FakeUpstream, backup: FakeUpstream) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import OTHER_KEY, policy_text

    gw = start_gateway(
        policy_text(
            primary,
            backup,
            extra_routes="- {name: team-b-cheap, when: {tenant: [team-b]}, to: backup}\n",
        )
    )
    assert (
        gw.client(OTHER_KEY)
        .chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        .headers["x-gateway-route"]
        == "team-b-cheap"
    )
    assert (
        gw.client()
        .chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        .headers["x-gateway-route"]
        == "default"
    )


def test_sdk_error_for_unknown_model(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_sticky_session_stays_on_the_model_that_answered_first(
    start_gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import policy_text
    from tests.fake_upstream import Fault

    gw = start_gateway(policy_text(primary, backup) + "routing: {sticky_sessions: true}\n")
    primary.script(*[Fault(status=503)] * 3)  # the first turn falls back to backup
    session = {"x-session-id": "conversation-1"}
    first = gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers=session
    )
    assert first.headers["x-gateway-model"] == "backup"
    later = gw.client().chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "more"},
        ],
        extra_headers=session,
    )
    assert (later.headers["x-gateway-route"], later.headers["x-gateway-model"]) == (
        "sticky",
        "backup",
    )
    other = gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "another conversation"}]
    )
    assert (other.headers["x-gateway-route"], other.headers["x-gateway-model"]) == (
        "default",
        "main",
    )
