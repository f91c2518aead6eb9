"""The API described and fuzzed: ``/openapi.json`` is a valid OpenAPI 3.1 document, and a few
hundred requests generated from it (bench/fuzz/run.py sends ten thousand) get no 5xx, errors in
OpenAI's shape, and answers the document describes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import schemathesis

from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream
from tests.fuzz.harness import fuzz, fuzz_policy
from tests.servers import RedisProcess


def test_the_document_is_valid_openapi_and_public(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI meta-schema
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert {
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/admin/reports/cost"),
        ("DELETE", "/admin/cache"),
    } <= operations
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages", "stream", "stream_options", "temperature", "tools"} <= set(
        chat["properties"]
    )
    assert chat.get("additionalProperties", True) is not False  # unknown fields pass through
    for secret in (TENANT_KEY, OTHER_KEY, ADMIN_KEY, "team-a", "upstream-main", "127.0.0.1"):
        assert secret not in response.text  # it describes the API, nothing of this deployment


def test_a_few_hundred_fuzzed_requests_get_no_5xx(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    gw = start_gateway(fuzz_policy(primary, backup), redis_url=own_redis.url)
    tally = fuzz(gw.url, examples=8, chat_examples=120, seed_value=13)
    assert tally.requests >= 300, tally.summary()
    assert tally.server_errors == 0, tally.summary()
    assert not tally.failures, "\n".join(map(str, tally.failures[:10]))
    assert tally.statuses[200] and tally.statuses[400] and tally.statuses[401]
