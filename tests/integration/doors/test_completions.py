"""The legacy Completions door through a running gateway, with the official openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream, Fault


def test_a_prompt_is_answered_as_a_text_completion(gateway: Gateway, primary: FakeUpstream) -> None:
    raw = gateway.client().completions.with_raw_response.create(
        model="auto", prompt="hello there", temperature=0, user="u-1"
    )
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "primary says: hello there", "stop")
    ]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, 4)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-model"] == "main"
    assert raw.headers["x-gateway-route"] == "default"
    assert raw.headers["x-gateway-cost-usd"] == "0.000045"  # 2 x $2.50/M + 4 x $10/M
    # What the upstream received: the prompt as one user message, OpenAI's legacy default
    # of 16 tokens, the shared fields under their names.
    sent = primary.requests[-1].body
    assert sent["messages"] == [{"role": "user", "content": "hello there"}]
    assert sent["max_tokens"] == 16
    assert sent["temperature"] == 0 and sent["user"] == "u-1"
    assert sent["model"] == "upstream-main"
    assert "prompt" not in sent


def test_a_stream_is_text_completion_chunks_then_done(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    with gateway.client().completions.with_streaming_response.create(
        model="auto", prompt="stream me", stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-model"] == "main"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == (
        "primary says: stream me"
    )
    # finish_reason is null until the last choice, as OpenAI streams it.
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-2:] == [
        None,
        "stop",
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert primary.requests[-1].body["stream"] is True


def test_the_sdk_reads_a_stream_without_usage(gateway: Gateway) -> None:
    stream = gateway.client().completions.create(model="auto", prompt="no usage", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "primary says: no usage"
    assert all(c.usage is None for c in chunks)  # the gateway asked upstream; the client did not


def test_stop_and_max_tokens(gateway: Gateway) -> None:
    client = gateway.client()
    stopped = client.completions.create(model="auto", prompt="one two three", stop=["two"])
    assert stopped.choices[0].text == "primary says: one "
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.completions.create(model="auto", prompt="one two three four", max_tokens=3)
    assert cut.choices[0].text == "primary says: one"
    assert cut.choices[0].finish_reason == "length"


def test_the_default_of_16_tokens_cuts_a_long_answer(gateway: Gateway) -> None:
    words = " ".join(f"w{i}" for i in range(30))
    completion = gateway.client().completions.create(model="auto", prompt=words)
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.choices[0].text.split()) == 16


def test_a_cache_hit_replays_as_a_text_completion_streamed_or_not(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    client = gateway.client()
    first = client.completions.create(model="auto", prompt="cache me", temperature=0)
    calls = len(primary.requests)
    raw = client.completions.with_raw_response.create(
        model="auto", prompt="cache me", temperature=0
    )
    again = raw.parse()
    assert raw.headers["x-gateway-cache"] == "exact"
    assert raw.headers["x-gateway-route"] == "cache"
    assert again.object == "text_completion"
    assert again.choices[0].text == first.choices[0].text == "primary says: cache me"
    assert again.usage == first.usage
    with client.completions.with_streaming_response.create(
        model="auto", prompt="cache me", temperature=0, stream=True
    ) as response:
        assert response.headers["x-gateway-cache"] == "exact"
        chunks = list(response.parse())
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "primary says: cache me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len(primary.requests) == calls  # both answered by the cache


def test_a_prompt_list_of_one_is_one_prompt(gateway: Gateway, primary: FakeUpstream) -> None:
    completion = gateway.client().completions.create(model="auto", prompt=["just one"])
    assert completion.choices[0].text == "primary says: just one"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "x", "suffix": "end"}, "suffix"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "messages"),
        ({"prompt": "x", "tools": []}, "tools"),
    ],
)
def test_what_the_chat_pipeline_cannot_express_is_refused_naming_the_field(
    gateway: Gateway, primary: FakeUpstream, fields: dict[str, object], param: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/completions",
        json={"model": "auto", **fields},
        headers={"authorization": f"Bearer {TENANT_KEY}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert primary.requests == []


def test_neutral_values_of_refused_fields_are_accepted(gateway: Gateway) -> None:
    completion = gateway.client().completions.create(
        model="auto", prompt="fine", echo=False, best_of=1, suffix=None, logprobs=None
    )
    assert completion.choices[0].text == "primary says: fine"


def test_a_stream_that_breaks_ends_with_an_error_event(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(drop_after_chunks=2))
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/completions",
        json={"model": "auto", "prompt": "break please", "stream": True},
        headers={"authorization": f"Bearer {TENANT_KEY}"},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert '"code":"upstream_stream_broken"' in lines[-1]
    assert all('"text_completion"' in line for line in lines[:-1])


def test_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        gateway.client().completions.create(model="no-such-model", prompt="x")


@pytest.mark.model
def test_the_real_local_engine_answers_a_prompt(local_gateway: Gateway) -> None:
    gw = local_gateway
    client = gw.client()
    completion = client.completions.create(
        model="auto", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens <= 6
    stream = client.completions.create(
        model="auto",
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        stream=True,
        extra_headers={"cache-control": "no-cache"},
    )
    streamed = "".join(c.choices[0].text for c in stream if c.choices)
    assert streamed == completion.choices[0].text  # greedy: the same answer


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "x", "max_tokens": "5"},
        {"prompt": "x", "best_of": "2"},
        {"prompt": "x", "echo": "yes"},
        {"prompt": "x", "stream": "yes"},
        {"prompt": {"text": "x"}},
        {"prompt": [None]},
    ],
)
def test_odd_bodies_are_4xx_never_5xx(gateway: Gateway, fields: dict[str, object]) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/completions",
        json={"model": "auto", **fields},
        headers={"authorization": f"Bearer {TENANT_KEY}"},
    )
    assert 400 <= response.status_code < 500, response.text
