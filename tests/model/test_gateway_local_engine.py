"""The default policy's shape, end to end: the gateway running the real SmolLM2 in-process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault

pytestmark = pytest.mark.model


def test_the_gateway_answers_offline_with_its_own_engine(local_gateway: Gateway) -> None:
    gw = local_gateway
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


def test_a_provider_without_usage_is_counted_with_the_models_tokenizer(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    from transformers import AutoTokenizer

    from local_engine import models

    cache_dir = request.config.cache.mkdir("local-engine-models")
    tokenizer_dir = models.local_path(models.resolve("smollm2-135m-instruct"), cache_dir)
    text = policy_text(primary, backup).replace(
        "model: upstream-main", f'model: upstream-main\n    tokenizer: "{tokenizer_dir}"'
    )
    gw = start_gateway(text)
    primary.script(Fault(no_usage=True))
    messages = [{"role": "user", "content": "count these tokens exactly"}]
    raw = gw.client().chat.completions.with_raw_response.create(model="auto", messages=messages)  # type: ignore[arg-type]
    record = gw.records(1)[0]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    answer = raw.parse().choices[0].message.content or ""
    assert not record.estimated
    assert record.input_tokens == len(prompt)
    assert record.output_tokens == len(tokenizer.encode(answer, add_special_tokens=False))
