"""The HTTP server over real HTTP (uvicorn on 127.0.0.1), with the official OpenAI SDK and httpx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from local_engine.engine import LocalEngine
from local_engine.server import create_app
from tests.engine.conftest import LONG_PROMPT, PROMPTS, Smol, messages
from tests.servers import ServerThread

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(smol: Smol) -> Iterator[tuple[ServerThread, LocalEngine]]:
    engine = LocalEngine.from_model(
        smol.model,
        smol.tokenizer,
        model_name=MODEL,
        max_running=1,
        max_queue=1,
        kv_cache_tokens=16384,
    )
    with ServerThread(create_app(engine)) as thread:
        yield thread, engine


@pytest.fixture
def client(server: tuple[ServerThread, LocalEngine]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{server[0].url}/v1", api_key="unused", max_retries=0, timeout=120
    ) as sdk:
        yield sdk


@pytest.fixture
def http(server: tuple[ServerThread, LocalEngine]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0].url, timeout=120) as plain:
        yield plain


def wait_until(predicate: Any, timeout: float = 60, what: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached in time: {what and what()}"
        time.sleep(0.02)


def test_sdk_completion_equals_generate(smol: Smol, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=messages(PROMPTS[0]),
        max_tokens=20,
        temperature=0,  # type: ignore[arg-type]
    )
    assert result.id.startswith("chatcmpl-") and result.object == "chat.completion"
    assert result.model == MODEL
    assert result.choices[0].message.content == smol.reference_text(PROMPTS[0])
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(smol.prompt_ids(PROMPTS[0]))
    assert result.usage.completion_tokens == len(smol.reference(PROMPTS[0]))


def test_sdk_stream_with_usage(smol: Smol, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages(PROMPTS[0]),
        max_tokens=20,
        temperature=0,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == smol.reference_text(PROMPTS[0])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(smol.reference(PROMPTS[0]))


def test_sse_wire_format(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": messages(PROMPTS[4]), "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        assert json.loads(event.removeprefix("data: "))["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "messages": []}, 400, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        ({"model": MODEL, "messages": messages("hi"), "max_tokens": 10**6}, 400, "max_tokens"),
        ({"model": MODEL, "messages": messages("hi"), "n": 3}, 400, "n"),
        ({"model": "no-such-model", "messages": messages("hi")}, 404, "model"),
        ({"model": "no-such-model", "messages": messages("hi"), "stream": True}, 404, "model"),
    ],
)
def test_errors_have_openai_shape(
    http: httpx.Client, body: dict[str, Any], status: int, param: str
) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_sdk_raises_its_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=messages("hi"))  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_invalid_json_and_unknown_paths(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()
    response = http.get("/v1/nothing-here")
    assert (
        response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"
    )


def test_full_queue_is_503_with_retry_after(
    server: tuple[ServerThread, LocalEngine], http: httpx.Client
) -> None:
    _, engine = server
    long = {
        "model": MODEL,
        "messages": messages(LONG_PROMPT),
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=long) as holder:
        lines = holder.iter_lines()  # kept: dropping it would close the connection
        next(lines)  # the request holds the only slot
        queued: list[httpx.Response] = []
        short = {"model": MODEL, "messages": messages(PROMPTS[4]), "max_tokens": 2}
        waiter = threading.Thread(
            target=lambda: queued.append(
                httpx.post(f"{server[0].url}/v1/chat/completions", json=short, timeout=120)
            )
        )
        waiter.start()
        wait_until(lambda: engine.stats().waiting == 1, what=lambda: (engine.stats(), queued))
        refused = http.post("/v1/chat/completions", json=short)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "engine_overloaded"
    # Leaving the block closed the held stream: the server cancels it and the queue moves on.
    waiter.join(timeout=120)
    assert queued[0].status_code == 200


def test_client_disconnect_cancels_the_request(
    server: tuple[ServerThread, LocalEngine], http: httpx.Client
) -> None:
    _, engine = server
    body = {
        "model": MODEL,
        "messages": messages(LONG_PROMPT),
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        wait_until(lambda: engine.stats().running == 1)
    wait_until(lambda: engine.stats().running == 0 and engine.backend.active_requests() == 0)


def test_a_non_streaming_client_that_leaves_is_cancelled(
    server: tuple[ServerThread, LocalEngine],
) -> None:
    _, engine = server
    body = {"model": MODEL, "messages": messages(LONG_PROMPT), "max_tokens": 400, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server[0].url}/v1/chat/completions", json=body, timeout=3)
    wait_until(lambda: engine.stats().running == 0 and engine.backend.active_requests() == 0)
    assert engine.stats().waiting == 0


def test_models_health_and_metrics(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL
    assert http.get("/healthz").json()["status"] == "ok"
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "local_engine_queue_depth",
        "local_engine_running_requests",
        "local_engine_generated_tokens_total",
        "local_engine_tokens_per_second",
        "local_engine_time_to_first_token_seconds_bucket",
        "local_engine_kv_cache_usage_ratio",
    ):
        assert name in metrics.text
