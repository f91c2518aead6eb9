"""The Embeddings door through a running gateway, with the official openai SDK."""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, embeddings
from tests.servers import RedisProcess

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
TENANT = {"authorization": f"Bearer {TENANT_KEY}"}


def _policy(primary: FakeUpstream, backup: FakeUpstream) -> str:
    """The chat models of the shared test policy, and two embeddings models before them."""
    models = f"""\
  embed-small:
    provider: openai_compatible
    kind: embeddings
    base_url: {primary.base_url}
    model: text-embedding-3-small
    max_dimensions: 1536
    price: {{input_per_mtok: 0.02}}
    retries: {{max_attempts: 1}}
  embed-ada:
    provider: openai_compatible
    kind: embeddings
    base_url: {backup.base_url}
    model: text-embedding-ada-002
    price: {{input_per_mtok: 0.10, output_per_mtok: 0}}
"""
    return policy_text(primary, backup).replace("models:\n", "models:\n" + models, 1)


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> Gateway:
    return start_gateway(_policy(primary, backup))


def _fake(text: str | list[int], size: int = 8) -> list[float]:
    """The vector the fake upstream gives ``text``, as float32 values."""
    vector = embeddings({"input": [text], "dimensions": size})["data"][0]["embedding"]
    return np.asarray(vector, np.float32).tolist()  # type: ignore[no-any-return]


def test_one_text_as_floats(gateway: Gateway, primary: FakeUpstream) -> None:
    raw = gateway.client().embeddings.with_raw_response.create(
        model="auto", input="hello embeddings world", encoding_format="float"
    )
    answer = raw.parse()
    assert [d.index for d in answer.data] == [0]
    assert answer.data[0].embedding == _fake("hello embeddings world")
    assert answer.model == "text-embedding-3-small"
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 3
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-model"] == "embed-small"
    assert raw.headers["x-gateway-route"] == "embeddings"
    assert raw.headers["x-gateway-request-id"].startswith("req_")
    assert raw.headers["x-gateway-cost-usd"] == "0.00000006"  # 3 tokens at $0.02/M
    sent = primary.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body == {
        "model": "text-embedding-3-small",
        "input": ["hello embeddings world"],
        "encoding_format": "float",
    }


def test_a_batch_the_sdk_asks_for_in_base64(gateway: Gateway, primary: FakeUpstream) -> None:
    texts = ["first text", "second", "the third one"]
    answer = gateway.client().embeddings.create(model="embed-small", input=texts)
    # With numpy installed the SDK asks for base64 and decodes it itself.
    assert primary.requests[-1].body["encoding_format"] == "base64"
    assert [d.embedding for d in answer.data] == [_fake(t) for t in texts]
    assert answer.usage.prompt_tokens == 6


def test_base64_is_little_endian_float32(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "auto", "input": ["a b", "c"], "encoding_format": "base64"},
        headers=TENANT,
    )
    assert response.status_code == 200, response.text
    rows = response.json()["data"]
    decoded = [np.frombuffer(base64.b64decode(r["embedding"]), "<f4").tolist() for r in rows]
    assert decoded == [_fake("a b"), _fake("c")]


def test_dimensions_reach_the_upstream_where_the_model_takes_them(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    client = gateway.client()
    answer = client.embeddings.create(model="embed-small", input="short", dimensions=16)
    assert primary.requests[-1].body["dimensions"] == 16
    assert answer.data[0].embedding == _fake("short", 16)
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model="embed-small", input="short", dimensions=4096)
    with pytest.raises(openai.BadRequestError) as not_taken:
        client.embeddings.create(model="embed-ada", input="short", dimensions=16)
    for refused in (too_many, not_taken):
        assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
    assert backup.requests == []


def test_token_ids_pass_to_an_openai_compatible_model(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    answer = gateway.client().embeddings.create(
        model="auto", input=[[1, 2, 3], [4]], encoding_format="float"
    )
    assert primary.requests[-1].body["input"] == [[1, 2, 3], [4]]
    assert [d.embedding for d in answer.data] == [_fake([1, 2, 3]), _fake([4])]


def test_the_exact_cache_answers_each_input_it_has(gateway: Gateway, primary: FakeUpstream) -> None:
    client = gateway.client()
    first = client.embeddings.create(model="auto", input=["alpha one", "beta two"])
    calls = len(primary.requests)
    raw = client.embeddings.with_raw_response.create(model="auto", input=["alpha one", "beta two"])
    again = raw.parse()
    assert len(primary.requests) == calls  # not called
    assert raw.headers["x-gateway-cache"] == "exact"
    assert raw.headers["x-gateway-route"] == "cache"
    assert raw.headers["x-gateway-cost-usd"] == "0"
    assert [d.embedding for d in again.data] == [d.embedding for d in first.data]
    assert again.usage.prompt_tokens == first.usage.prompt_tokens == 4
    # The same input in another encoding is the same entry.
    floats = client.embeddings.create(model="auto", input="alpha one", encoding_format="float")
    assert len(primary.requests) == calls
    assert floats.data[0].embedding == first.data[0].embedding
    # One new input among cached ones: the model embeds it alone; the answer keeps the order.
    raw = client.embeddings.with_raw_response.create(
        model="auto", input=["beta two", "gamma three four", "alpha one"]
    )
    mixed = raw.parse()
    assert primary.requests[-1].body["input"] == ["gamma three four"]
    assert len(primary.requests) == calls + 1
    assert raw.headers["x-gateway-cache"] == "miss"  # "exact" only when every input hit
    assert raw.headers["x-gateway-route"] == "embeddings"
    assert raw.headers["x-gateway-cost-usd"] == "0.00000006"  # the 3 new tokens only
    assert [d.embedding for d in mixed.data] == [
        _fake("beta two"),
        _fake("gamma three four"),
        _fake("alpha one"),
    ]
    assert mixed.usage.prompt_tokens == 7


def test_cache_entries_are_per_model_dimensions_and_tenant(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway.client().embeddings.create(model="embed-small", input="shared text")
    calls = len(primary.requests)
    gateway.client().embeddings.create(model="embed-small", input="shared text", dimensions=12)
    gateway.client(OTHER_KEY).embeddings.create(model="embed-small", input="shared text")
    assert len(primary.requests) == calls + 2
    gateway.client().embeddings.create(model="embed-ada", input="shared text")
    assert len(backup.requests) == 1


def test_no_cache_header_bypasses(gateway: Gateway, primary: FakeUpstream) -> None:
    client = gateway.client()
    client.embeddings.create(model="auto", input="bypass me")
    raw = client.embeddings.with_raw_response.create(
        model="auto", input="bypass me", extra_headers={"cache-control": "no-cache"}
    )
    assert raw.headers["x-gateway-cache"] == "bypass"
    assert len(primary.requests) == 2


def test_models_of_the_wrong_kind_and_unknown_models(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.NotFoundError, match="is a chat model"):
        client.embeddings.create(model="main", input="x")
    with pytest.raises(openai.NotFoundError, match="not a model of this gateway"):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError, match="is an embeddings model"):
        client.chat.completions.create(
            model="embed-small", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.NotFoundError, match="is an embeddings model"):
        client.completions.create(model="embed-small", prompt="x")


def test_auto_without_an_embeddings_model_is_404(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup))
    with pytest.raises(openai.NotFoundError, match="no embeddings model"):
        gw.client().embeddings.create(model="auto", input="x")


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("", "input[0]"),
        ([], "input"),
        (["ok", ""], "input[1]"),
        ([[]], "input[0]"),
        ([["a"]], "input[0]"),
        ([1, "a"], "input[0]"),
        ({"text": "a"}, "input"),
        (7, "input"),
        (["x"] * 2049, "input"),
    ],
)
def test_bad_inputs_are_400(
    gateway: Gateway, primary: FakeUpstream, value: object, param: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/embeddings", json={"model": "auto", "input": value}, headers=TENANT
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert primary.requests == []


def test_an_unknown_encoding_is_400(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "auto", "input": "x", "encoding_format": "int8"},
        headers=TENANT,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "encoding_format"


def test_the_ledger_and_the_cost_report(gateway: Gateway) -> None:
    client = gateway.client()
    tags = {"x-gateway-tags": "app=search"}
    client.embeddings.create(model="auto", input=["one two", "three"], extra_headers=tags)
    client.embeddings.create(model="auto", input=["one two", "three"], extra_headers=tags)
    client.embeddings.create(model="embed-ada", input="four five six", extra_headers=tags)
    records = sorted(gateway.records(3), key=lambda r: r.time)
    assert len(records) == 3
    miss, hit, ada = records
    assert (miss.model, miss.route, miss.cache, miss.input_tokens) == (
        "embed-small",
        "embeddings",
        "miss",
        3,
    )
    assert miss.output_tokens == 0 and miss.tags == {"app": "search"} and not miss.estimated
    assert miss.cost_usd == miss.baseline_cost_usd == Decimal("0.00000006")
    assert (hit.route, hit.cache, hit.input_tokens, hit.cost_usd) == ("cache", "exact", 3, 0)
    assert hit.baseline_cost_usd == Decimal("0.00000006")  # what the hit saved
    assert (ada.model, ada.route, ada.cost_usd) == ("embed-ada", "forced", Decimal("0.0000003"))
    report = httpx.get(
        f"{gateway.url}/admin/reports/cost", params={"by": "model"}, headers=ADMIN
    ).json()
    rows = {row["model"]: row for row in report["rows"]}
    assert rows["embed-small"]["requests"] == 2
    assert Decimal(rows["embed-small"]["cost_usd"]) == Decimal("0.00000006")
    assert Decimal(rows["embed-ada"]["cost_usd"]) == Decimal("0.0000003")


def test_an_upstream_failure_is_a_503_with_its_record(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    unreachable = _policy(primary, backup).replace(primary.base_url, "http://127.0.0.1:9/v1", 1)
    gw = start_gateway(unreachable)
    with pytest.raises(openai.APIStatusError) as failed:
        gw.client().embeddings.create(model="auto", input="nobody home")
    assert failed.value.status_code == 503
    assert failed.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    (record,) = gw.records(1)
    assert (record.model, record.status, record.cost_usd) == ("embed-small", 503, None)


BUNDLED_POLICY = """\
version: 1
models:
  local-embed:
    provider: local_engine
    kind: embeddings
    model: all-MiniLM-L6-v2
    price: {input_per_mtok: 0.01}
  chat:
    provider: openai_compatible
    base_url: BASE_URL
    model: upstream-main
    price: {input_per_mtok: 0.02, output_per_mtok: 0.02}
cache:
  semantic: {enabled: true}
routes:
  - name: default
    to: chat
"""
LONG = " ".join(f"word{i} and some more text" for i in range(60))  # ~400 pieces: truncated


@pytest.mark.model
def test_the_bundled_minilm_gives_sentence_transformers_vectors(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream
) -> None:
    from sentence_transformers import SentenceTransformer

    from gateway.ml.embedder import resolve_model

    gw = start_gateway(BUNDLED_POLICY.replace("BASE_URL", primary.base_url))
    texts = ["What is the capital of France?", "  padded  ", LONG[:600], LONG]
    client = gw.client()
    raw = client.embeddings.with_raw_response.create(model="auto", input=texts)
    answer = raw.parse()
    assert raw.headers["x-gateway-model"] == "local-embed"
    assert answer.model == "model"  # the bundled package's directory
    reference = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    got = np.array([d.embedding for d in answer.data], np.float32)
    assert got.shape == (4, 384)
    assert np.abs(got - expected).max() < 1e-4
    assert (got * expected).sum(axis=1).min() > 0.99999
    # Tokens: the model's own tokenizer, special tokens included, truncated at 256 as read.
    counts = [
        len(reference.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts
    ]
    assert counts[3] == 256
    assert answer.usage.prompt_tokens == sum(counts)
    floats = client.embeddings.create(model="local-embed", input=texts[0], encoding_format="float")
    assert floats.data[0].embedding == got[0].tolist()  # from the cache, the same numbers
    first, hit = sorted(gw.records(2), key=lambda r: r.time)
    assert first.input_tokens == sum(counts) and first.cost_usd == Decimal(sum(counts)) / 10**8
    assert (hit.cache, hit.input_tokens, hit.cost_usd) == ("exact", counts[0], 0)


@pytest.mark.model
def test_the_bundled_minilm_refuses_what_it_cannot_do(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream
) -> None:
    gw = start_gateway(BUNDLED_POLICY.replace("BASE_URL", primary.base_url))
    for fields, param in (
        ({"input": "x", "dimensions": 128}, "dimensions"),
        ({"input": [[101, 102]]}, "input[0]"),
        ({"input": "x", "input_type": "query"}, "input_type"),
    ):
        response = httpx.post(
            f"{gw.url}/v1/embeddings", json={"model": "auto", **fields}, headers=TENANT
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


def test_vectors_are_shared_by_replicas_through_redis_and_flushed_per_tenant(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    text = _policy(primary, backup)
    one, two = (start_gateway(text, redis_url=own_redis.url) for _ in range(2))
    first = one.client().embeddings.create(model="auto", input=["red one", "red two"])
    calls = len(primary.requests)
    raw = two.client().embeddings.with_raw_response.create(
        model="auto", input=["red two", "red one"]
    )
    assert raw.headers["x-gateway-cache"] == "exact" and len(primary.requests) == calls
    assert [d.embedding for d in raw.parse().data] == [d.embedding for d in first.data][::-1]
    flushed = httpx.delete(f"{two.url}/admin/cache", params={"tenant": "team-a"}, headers=ADMIN)
    assert flushed.status_code == 200, flushed.text
    raw = two.client().embeddings.with_raw_response.create(model="auto", input=["red one"])
    assert raw.headers["x-gateway-cache"] == "miss" and len(primary.requests) == calls + 1
    own_redis.kill()  # a store that is down is bypassed, never waited on
    raw = one.client().embeddings.with_raw_response.create(model="auto", input=["red one"])
    assert raw.headers["x-gateway-cache"] == "bypass"


@pytest.mark.parametrize(
    "body",
    [
        {"model": 1, "input": "x"},
        {"model": "auto", "input": "x", "dimensions": "8"},
        {"model": "auto", "input": "x", "dimensions": True},
        {"model": "auto", "input": "x", "dimensions": 2**80},
        {"model": "embed-small", "input": "x", "dimensions": 2**62},
        {"model": "auto", "input": [2**70]},
        {"model": "auto", "input": [[[1]]]},
        {"model": "auto", "input": [None]},
        {"model": "auto", "input": "x", "encoding_format": None, "user": 5},
    ],
)
def test_odd_bodies_are_4xx_never_5xx(gateway: Gateway, body: dict[str, object]) -> None:
    response = httpx.post(f"{gateway.url}/v1/embeddings", json=body, headers=TENANT)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_tenant_past_its_budget_is_refused_not_downgraded(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    spent = _policy(primary, backup).replace(
        f'team-a: {{api_keys: ["{TENANT_KEY}"]}}',
        f'team-a: {{api_keys: ["{TENANT_KEY}"], daily_budget_usd: 0, '
        "on_budget_exceeded: downgrade}",
    )
    gw = start_gateway(spent)
    chat = gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert chat.headers["x-gateway-route"] == "budget-downgrade"  # chat is downgraded
    assert chat.headers["x-gateway-model"] == "backup"
    with pytest.raises(openai.RateLimitError) as refused:
        gw.client().embeddings.create(model="auto", input="x")
    assert refused.value.code == "budget_exceeded"
    assert primary.requests == []  # the embeddings model was never called
