"""The default policy's shape, end to end: the gateway running the real SmolLM2 in-process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.model


def test_the_gateway_answers_offline_with_its_own_engine(
    start_gateway: Callable[..., Gateway], request: pytest.FixtureRequest
) -> None:
    cache_dir = request.config.cache.mkdir("local-engine-models")  # shared with tests/engine
    gw = start_gateway(f"""\
version: 1
models:
  local-small:
    provider: local_engine
    model: smollm2-135m-instruct
    engine: {{device: cpu, cache_dir: "{cache_dir}"}}
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.02}}
routes:
  - {{name: default, to: local-small}}
""")
    client = gw.client()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, max_tokens=12, temperature=0
    )  # type: ignore[arg-type]
    completion = raw.parse()
    assert raw.headers["x-gateway-model"] == "local-small"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens <= 12
    assert completion.choices[0].finish_reason in ("stop", "length")

    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        extra_headers={"cache-control": "no-cache"},
    ) as response:  # type: ignore[arg-type]
        chunks = list(response.parse())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == completion.choices[0].message.content  # greedy: the same answer
    record = next(r for r in gw.records(2) if r.stream)
    assert record.output_tokens == completion.usage.completion_tokens and not record.estimated
