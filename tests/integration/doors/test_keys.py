"""Closed by default on every door: no key, or a key no tenant has, gets a 401 in the door's
own error shape and reaches no model; a stored response is not even looked up."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream

USER = [{"role": "user", "content": "hi"}]
DOORS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/chat/completions", {"model": "auto", "messages": USER}),
    ("POST", "/v1/messages", {"model": "auto", "max_tokens": 8, "messages": USER}),
    ("POST", "/v1/messages/count_tokens", {"model": "auto", "messages": USER}),
    ("POST", "/v1/responses", {"model": "auto", "input": "hi"}),
    ("GET", "/v1/responses/resp_0123", None),
    ("DELETE", "/v1/responses/resp_0123", None),
    ("POST", "/v1/completions", {"model": "auto", "prompt": "hi"}),
    ("POST", "/v1/embeddings", {"model": "auto", "input": "hi"}),
    ("GET", "/v1/models", None),
]


@pytest.mark.parametrize(("method", "path", "body"), DOORS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer sk-not-a-key-of-this-gateway"}, {"x-api-key": "sk-wrong-wrong"}],
)
def test_every_door_refuses_a_missing_or_unknown_key(
    gateway: Gateway,
    primary: FakeUpstream,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    response = httpx.request(method, gateway.url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == 401, response.text
    error = response.json()
    if path.startswith("/v1/messages"):
        assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    else:
        assert error["error"]["code"] == "invalid_api_key"
    assert primary.requests == []
