"""The embeddings stage's parts without a server: inputs, routing, capability checks, per-input
cache keys, token shares and the answer's encodings."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import numpy as np
import pytest

from gateway.errors import BadRequest, ModelNotFound
from gateway.pipeline import embeddings
from gateway.pipeline.exact_cache import CachedVector, vector_keys
from gateway.pipeline.normalize import ChatRequest, chat_request, embeddings_request_of
from gateway.pipeline.route import choose, choose_embeddings
from gateway.policy.schema import ModelConfig, Policy
from gateway.providers import Embedded
from gateway.runtime.sessions import Sessions


def request(body: dict[str, Any], tenant: str = "t") -> ChatRequest:
    return embeddings_request_of(body, request_id="req_1", tenant=tenant, tags_header=None)


POLICY = Policy.model_validate(
    {
        "version": 1,
        "models": {
            "chat": {"provider": "openai_compatible", "base_url": "http://x/v1", "model": "m"},
            "e1": {
                "provider": "openai_compatible",
                "kind": "embeddings",
                "base_url": "http://x/v1",
                "model": "text-embedding-3-small",
                "max_dimensions": 512,
            },
            "e2": {"provider": "local_engine", "kind": "embeddings", "model": "all-MiniLM-L6-v2"},
        },
        "routes": [{"name": "default", "to": "chat"}],
    }
)


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("one", ["one"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
    ],
)
def test_every_input_shape_becomes_a_list(value: object, inputs: list[object]) -> None:
    parsed = request({"model": "auto", "input": value})
    assert parsed.body["input"] == inputs
    assert not parsed.stream and parsed.model == "auto"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "input": ""}, "input[0]"),
        ({"model": "auto", "input": [True]}, "input[0]"),
        ({"model": "auto", "input": [-1]}, "input[0]"),
        ({"model": "auto", "input": ["x"] * 2049}, "input"),
        ({"model": "auto"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "auto", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "auto", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        request(body)
    assert refused.value.param == param


def test_auto_is_the_first_embeddings_model_and_kinds_do_not_mix() -> None:
    assert (choose_embeddings(POLICY, "auto").route, choose_embeddings(POLICY, "auto").model) == (
        "embeddings",
        "e1",
    )
    assert choose_embeddings(POLICY, "e2").route == "forced"
    for name in ("chat", "ghost"):
        with pytest.raises(ModelNotFound):
            choose_embeddings(POLICY, name)
    chat = chat_request(
        msgspec.json.encode({"model": "e1", "messages": [{"role": "user", "content": "x"}]}),
        request_id="req_1",
        tenant="t",
        tags_header=None,
    )
    with pytest.raises(ModelNotFound, match="embeddings model"):
        choose(POLICY, chat, Sessions(60, 10))


def test_capabilities_are_checked_before_any_call() -> None:
    e1, e2 = POLICY.models["e1"], POLICY.models["e2"]
    embeddings.check("e1", e1, {"input": [[1, 2]], "dimensions": 512, "input_type": "query"})
    refusals: list[tuple[ModelConfig, dict[str, Any], str]] = [
        (e1, {"input": ["x"], "dimensions": 513}, "dimensions"),
        (e2, {"input": ["x"], "dimensions": 384}, "dimensions"),
        (e2, {"input": ["x", [1]]}, "input[1]"),
        (e2, {"input": ["x"], "input_type": "query"}, "input_type"),
    ]
    for config, body, param in refusals:
        with pytest.raises(BadRequest) as refused:
            embeddings.check("m", config, body)
        assert refused.value.param == param
    embeddings.check("e2", e2, {"model": "e2", "input": ["x"], "user": "u"})


def test_cache_keys_are_per_input_tenant_model_and_vector_fields() -> None:
    keys = vector_keys(request({"model": "auto", "input": ["a", "b"]}), "e1", "v1")
    assert len(set(keys)) == 2
    same = vector_keys(
        request({"model": "e1", "input": ["b"], "encoding_format": "base64", "user": "u"}),
        "e1",
        "v1",
    )
    assert same == keys[1:]  # neither the encoding, the user nor the model alias matter
    for other in (
        vector_keys(request({"model": "auto", "input": ["b"]}, tenant="u"), "e1", "v1"),
        vector_keys(request({"model": "auto", "input": ["b"]}), "e2", "v1"),
        vector_keys(request({"model": "auto", "input": ["b"]}), "e1", "v2"),
        vector_keys(request({"model": "auto", "input": ["b"], "dimensions": 8}), "e1", "v1"),
        vector_keys(request({"model": "auto", "input": [[98]]}), "e1", "v1"),
    ):
        assert other[0] != keys[1]
    assert (
        keys[0].split(":")[0]
        != vector_keys(request({"model": "auto", "input": ["a"]}, tenant="u"), "e1", "v1")[0].split(
            ":"
        )[0]
    )  # the tenant's prefix, for flushing one tenant


def _embedded(prompt_tokens: int | None, tokens: tuple[int, ...] | None = None) -> Embedded:
    return Embedded(np.zeros((3, 2), np.float32), "m", prompt_tokens, tokens)


def test_token_shares() -> None:
    inputs: list[str | list[int]] = ["aaaa", "aaaaaaaa", [1, 2, 3]]  # 4, 8 and 12 bytes
    assert embeddings.shares(_embedded(10, (1, 2, 3)), inputs) == ([1, 2, 3], False)
    counts, estimated = embeddings.shares(_embedded(10), inputs)
    assert sum(counts) == 10 and counts == [2, 3, 5] and not estimated
    assert embeddings.shares(_embedded(None), inputs) == ([1, 2, 3], True)


def test_the_answer_in_floats_and_base64() -> None:
    vector = np.array([0.1, -2.5, 3.0], np.float32)
    cached = [CachedVector("up", 4, vector.astype("<f4").tobytes(), 0.0)]
    floats = msgspec.json.decode(embeddings.answer(cached, None))
    assert floats["object"] == "list" and floats["model"] == "up"
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert floats["data"] == [{"object": "embedding", "index": 0, "embedding": vector.tolist()}]
    assert np.float32(floats["data"][0]["embedding"][0]) == np.float32(0.1)
    encoded = msgspec.json.decode(embeddings.answer(cached, "base64"))["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(encoded), "<f4").tolist() == vector.tolist()


def test_an_upstream_answer_is_read_in_either_encoding_or_refused() -> None:
    from gateway.providers import AttemptFailed
    from gateway.providers.openai_compatible import embedded

    packed = base64.b64encode(np.array([1.5, 2], "<f4").tobytes()).decode()
    raw = msgspec.json.encode(
        {
            "data": [{"index": 1, "embedding": packed}, {"index": 0, "embedding": [0.5, 1]}],
            "model": "up",
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
    )
    got = embedded(raw, 2)
    assert got.vectors.tolist() == [[0.5, 1.0], [1.5, 2.0]] and got.vectors.dtype == np.float32
    assert (got.model, got.prompt_tokens, got.tokens) == ("up", 3, None)
    for bad in (
        b"not json",
        b'{"data": [{"index": 0, "embedding": "%%%"}]}',
        b'{"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": [1, 2]}]}',
        b'{"data": [{"index": 0, "embedding": [1]}]}',  # one vector for two inputs
    ):
        with pytest.raises(AttemptFailed) as failed:
            embedded(bad, 2)
        assert failed.value.kind == "protocol"
