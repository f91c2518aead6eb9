"""Closed by default: who can reach a gateway, and what it refuses to open.

A policy without tenants (open access) is served only on loopback, unless the operator asked
for it with --allow-open: at start and on every reload. On loopback, cross-site browsers are
kept out (JSON bodies only, loopback Host names only), and /metrics answers only the admin key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from gateway.policy.load import PolicyError
from gateway.runtime.store import PolicyStore
from gateway.settings import Settings
from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
OPEN_WITH_ADMIN = f'admin: {{api_keys: ["{ADMIN_KEY}"]}}\n'
CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}


def _version(gw: Gateway) -> str:
    response = httpx.get(f"{gw.url}/admin/policy", headers=ADMIN)
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def test_a_reload_that_would_open_a_public_gateway_is_refused(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), host="0.0.0.0")
    running = _version(gw)
    gw.policy_path.write_text(policy_text(primary, backup, tenants=False) + OPEN_WITH_ADMIN)
    refused = httpx.post(f"{gw.url}/admin/policy/reload", headers=ADMIN)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_policy" and "no tenants" in " ".join(error["problems"])
    assert _version(gw) == running
    anonymous = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)
    assert anonymous.status_code == 401  # the tenants' keys still guard it
    assert gw.client().chat.completions.create(**CHAT).choices[0].message.content


def test_the_file_watcher_refuses_it_too(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), host="0.0.0.0", watch=True)
    running = _version(gw)
    gw.policy_path.write_text(
        policy_text(primary, backup, tenants=False).replace("upstream-main", "changed")
        + OPEN_WITH_ADMIN
    )
    time.sleep(1.5)  # the watcher's debounce and reload
    assert _version(gw) == running
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT).status_code == 401


@pytest.mark.parametrize(("host", "allow_open", "starts"), [
    ("0.0.0.0", False, False),
    ("192.168.1.10", False, False),
    ("0.0.0.0", True, True),
    ("127.0.0.1", False, True),
    ("::1", False, True),
])  # fmt: skip
async def test_an_open_policy_starts_only_where_it_is_safe(
    tmp_path: Path,
    primary: FakeUpstream,
    backup: FakeUpstream,
    host: str,
    allow_open: bool,
    starts: bool,
) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(policy_text(primary, backup, tenants=False))
    store = PolicyStore(Settings(policy_path=path, host=host, allow_open=allow_open))
    try:
        if starts:
            assert not (await store.start()).tenants
        else:
            with pytest.raises(PolicyError, match="no tenants"):
                await store.start()
    finally:
        await store.aclose()


def test_metrics_answer_only_the_admin_key(gateway: Gateway) -> None:
    gateway.client().chat.completions.create(**CHAT)
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    tenant = {"authorization": f"Bearer {TENANT_KEY}"}
    refused = httpx.get(f"{gateway.url}/metrics", headers=tenant)
    assert refused.status_code == 401 and "team-a" not in refused.text
    scraped = httpx.get(f"{gateway.url}/metrics", headers=ADMIN)
    assert scraped.status_code == 200
    assert "gateway_requests_total{" in scraped.text and 'tenant="team-a"' in scraped.text


def test_metrics_are_off_without_an_admin_key(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, tenants=False))
    refused = httpx.get(f"{gw.url}/metrics", headers=ADMIN)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_the_api_takes_json_bodies_only(gateway: Gateway, content_type: str | None) -> None:
    headers = {"authorization": f"Bearer {TENANT_KEY}"}
    if content_type:
        headers["content-type"] = content_type
    body = b'{"model": "main", "messages": [{"role": "user", "content": "hi"}]}'
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and error["param"] == "content-type"
    record = gateway.records(1)[0]
    assert (record.status, record.tenant, record.cost_usd) == (415, "team-a", 0)


@pytest.fixture
def open_gateway(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> Gateway:
    return start_gateway(policy_text(primary, backup, tenants=False))


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "10.0.0.5", "127.0.0.1.nip.io"]
)
def test_an_open_gateway_turns_away_other_host_names(open_gateway: Gateway, host: str) -> None:
    """DNS rebinding: a page's own name resolving to 127.0.0.1 still sends that name."""
    response = httpx.post(
        f"{open_gateway.url}/v1/chat/completions", json=CHAT, headers={"host": host}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(f"{open_gateway.url}/v1/models", headers={"host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:1234", "[::1]:80"])
def test_an_open_gateway_answers_loopback_names(open_gateway: Gateway, host: str) -> None:
    response = httpx.post(
        f"{open_gateway.url}/v1/chat/completions", json=CHAT, headers={"host": host}
    )
    assert response.status_code == 200, response.text


def test_the_sdk_works_against_an_open_gateway(open_gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{open_gateway.url}/v1", api_key="anything", max_retries=0)
    assert client.chat.completions.create(**CHAT).choices[0].message.content
    client.close()


def test_host_names_matter_only_while_the_gateway_is_open(
    gateway: Gateway,
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
) -> None:
    keyed = {"host": "gateway.internal.example", "authorization": f"Bearer {TENANT_KEY}"}
    assert (
        httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=keyed).status_code
        == 200
    )
    opened = start_gateway(policy_text(primary, backup, tenants=False), allow_open=True)
    response = httpx.post(
        f"{opened.url}/v1/chat/completions", json=CHAT, headers={"host": "gw.lan"}
    )
    assert response.status_code == 200
