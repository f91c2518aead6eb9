"""SageMaker against a fake SageMaker runtime (real HTTP, signatures recomputed with botocore):
the provider alone for both container formats, then end to end through a running gateway with
the openai SDK."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gateway.policy.models import AwsOptions, ContainerOptions, ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.sagemaker import SageMaker
from tests.conftest import ADMIN_KEY, Gateway
from tests.fake_upstream import FakeUpstream
from tests.fakes.aws import ACCESS_KEY, REGION, SECRET_KEY, streamed
from tests.fakes.policy import policy_with_backup
from tests.fakes.sagemaker import COMPONENT, FakeSageMaker, SageMakerFault
from tests.servers import module_fixtures

ENDPOINT = "llama-3-endpoint"
USER = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


_sagemaker, sagemaker = module_fixtures("sagemaker", FakeSageMaker)


def provider(
    fake: FakeSageMaker, container: str = "openai", component: str | None = None
) -> SageMaker:
    aws = AwsOptions(
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        inference_component=component,
    )
    config = ModelConfig(
        provider="sagemaker",
        base_url=fake.url,
        model=ENDPOINT,
        aws=aws,
        container=ContainerOptions(format=container),  # type: ignore[arg-type]
    )
    return SageMaker(config)


async def complete(client: SageMaker, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads((await client.complete(body)).body)  # type: ignore[no-any-return]
    finally:
        await client.aclose()


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_openai_container_gets_the_body_signed_with_the_component(
    sagemaker: FakeSageMaker,
) -> None:
    sagemaker.component = "llama-ic-1"
    answer = await complete(
        provider(sagemaker, component="llama-ic-1"), {"model": "auto", "messages": USER}
    )
    assert answer["choices"][0]["message"]["content"] == "sagemaker says: hello there"
    (received,) = sagemaker.requests
    assert (received.endpoint, received.path) == (ENDPOINT, "invocations")
    assert received.body == {"messages": USER}
    assert received.signed.ok, received.signed.problem
    assert received.signed.signed_headers == ("content-type", "host", "x-amz-date", COMPONENT)


async def test_the_streaming_path_sends_the_component_too(sagemaker: FakeSageMaker) -> None:
    sagemaker.component = "llama-ic-1"
    got, failure = await streamed(provider(sagemaker, component="llama-ic-1"), {"messages": USER})
    assert failure is None and text_of(got) == "sagemaker says: hello there"
    assert sagemaker.requests[0].path == "invocations-response-stream"
    assert sagemaker.requests[0].headers[COMPONENT] == "llama-ic-1"
    assert sagemaker.requests[0].signed.ok


async def test_without_the_component_an_endpoint_that_needs_one_refuses(
    sagemaker: FakeSageMaker,
) -> None:
    sagemaker.component = "llama-ic-1"
    got, failure = await streamed(provider(sagemaker), {"messages": USER})
    assert got == [] and failure is not None
    assert failure.status == 400 and failure.clients_fault


async def test_sse_lines_cut_anywhere_across_payload_parts_read_the_same(
    sagemaker: FakeSageMaker,
) -> None:
    body = {"messages": USER, "tools": TOOLS, **STREAM}
    whole, failure = await streamed(provider(sagemaker), body)
    assert failure is None and whole[-1]["usage"]["total_tokens"] > 0
    rng = random.Random(15)
    for sizes in [
        (1,),
        (2, 3),
        (7,),
        *[tuple(rng.randint(1, 90) for _ in range(5)) for _ in range(12)],
    ]:
        sagemaker.part_sizes = sizes
        got, failure = await streamed(provider(sagemaker), body)
        assert failure is None, sizes
        assert [{**c, "created": 0} for c in got] == [{**c, "created": 0} for c in whole], sizes


async def test_a_model_stream_error_after_two_parts_is_a_retryable_failure(
    sagemaker: FakeSageMaker,
) -> None:
    sagemaker.part_sizes = (1000,)
    sagemaker.script(SageMakerFault(stream_exception="ModelStreamError", after_parts=1))
    got, failure = await streamed(provider(sagemaker), {"messages": USER, **STREAM})
    assert got and failure is not None
    assert failure.status == 502 and failure.retryable and "ModelStreamError" in failure.message


@pytest.mark.parametrize(
    ("fault", "status", "retryable", "clients_fault"),
    [
        (SageMakerFault(400, "ThrottlingException"), 429, True, False),
        (SageMakerFault(429, "ModelNotReadyException"), 503, True, False),
        (SageMakerFault(503, "ServiceUnavailable"), 503, True, False),
        (SageMakerFault(400, "ValidationError"), 400, False, True),
        (SageMakerFault(403, "AccessDeniedException"), 403, False, False),
        (SageMakerFault(424, "ModelError", original_status=503), 503, True, False),
        (SageMakerFault(424, "ModelError", original_status=400), 400, False, True),
    ],
)
async def test_errors_are_classified_by_aws_type_and_the_containers_status(
    sagemaker: FakeSageMaker,
    fault: SageMakerFault,
    status: int,
    retryable: bool,
    clients_fault: bool,
) -> None:
    sagemaker.script(fault)
    with pytest.raises(AttemptFailed) as failed:
        await complete(provider(sagemaker), {"messages": USER})
    found = failed.value
    assert (found.status, found.retryable, found.clients_fault) == (
        status,
        retryable,
        clients_fault,
    )


async def test_tgi_container_answers_with_usage_from_its_details(sagemaker: FakeSageMaker) -> None:
    sagemaker.format = "tgi"
    body = {"messages": [{"role": "system", "content": "Be brief."}, *USER], "max_tokens": 9}
    answer = await complete(provider(sagemaker, "tgi"), body)
    assert answer["choices"][0]["message"]["content"] == "sagemaker says: hello there"
    sent = sagemaker.requests[0].body
    assert sent["inputs"] == "System: Be brief.\n\nUser: hello there\n\nAssistant:"
    assert sent["parameters"]["max_new_tokens"] == 9
    prompt_tokens = len(sent["inputs"].split())
    assert answer["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 4,
        "total_tokens": prompt_tokens + 4,
    }


async def test_tgi_stream_lines_cut_anywhere_read_the_same(sagemaker: FakeSageMaker) -> None:
    sagemaker.format = "tgi"
    for sizes in [(4096,), (1,), (3, 11), (17, 2, 40)]:
        sagemaker.part_sizes = sizes
        got, failure = await streamed(provider(sagemaker, "tgi"), {"messages": USER, **STREAM})
        assert failure is None, sizes
        assert text_of(got) == "sagemaker says: hello there"
        assert got[-1]["choices"][0]["finish_reason"] == "stop"
        assert sagemaker.requests[-1].body["stream"] is True


async def test_tgi_refuses_tools_by_name_without_calling(sagemaker: FakeSageMaker) -> None:
    with pytest.raises(AttemptFailed) as failed:
        await complete(provider(sagemaker, "tgi"), {"messages": USER, "tools": TOOLS})
    assert failed.value.status == 400 and failed.value.clients_fault
    assert failed.value.body is not None and failed.value.body["error"]["param"] == "tools"
    assert sagemaker.requests == []


def policy(sagemaker: FakeSageMaker, backup: FakeUpstream, container: str) -> str:
    entry = f"""\
        provider: sagemaker
        base_url: {sagemaker.url}
        model: {ENDPOINT}
        aws: {{region: {REGION}, access_key_id: "${{TEST_AWS_KEY_ID}}",
               secret_access_key: "${{TEST_AWS_SECRET}}", inference_component: llama-ic-1}}
        container: {{format: {container}}}
        price: {{input_per_mtok: 0.60, output_per_mtok: 2.40}}
        """
    return policy_with_backup("llama", entry, backup.base_url)


@pytest.fixture
def start(
    start_gateway: Callable[..., Gateway],
    sagemaker: FakeSageMaker,
    backup: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], Gateway]:
    monkeypatch.setenv("TEST_AWS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("TEST_AWS_SECRET", SECRET_KEY)
    sagemaker.component = "llama-ic-1"
    return lambda container: start_gateway(policy(sagemaker, backup, container))


def test_a_tool_call_streamed_and_not_priced_to_the_cent(
    start: Callable[[str], Gateway], sagemaker: FakeSageMaker
) -> None:
    gateway = start("openai")
    sagemaker.part_sizes = (5, 13)
    client = gateway.client()
    answer = client.chat.completions.create(model="auto", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"echo": "hello there"}  # type: ignore[union-attr]
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert text_of([c.model_dump() for c in chunks]) == "sagemaker says: stream it"
    usage = chunks[-1].usage
    assert usage is not None and answer.usage is not None
    records = sorted(gateway.records(2), key=lambda r: r.time)
    for record, counted in zip(records, (answer.usage, usage), strict=True):
        expected = (
            Decimal(counted.prompt_tokens) * Decimal("0.60")
            + Decimal(counted.completion_tokens) * Decimal("2.40")
        ) / 1_000_000
        assert record.cost_usd == expected and record.model == "llama" and not record.estimated
    assert all(r.signed.ok and r.headers[COMPONENT] == "llama-ic-1" for r in sagemaker.requests)


@pytest.mark.parametrize("stream_it", [False, True])
def test_a_503_falls_back_to_the_other_provider(
    start: Callable[[str], Gateway],
    sagemaker: FakeSageMaker,
    backup: FakeUpstream,
    stream_it: bool,
) -> None:
    gateway = start("openai")
    fault = SageMakerFault(424, "ModelError", original_status=503)
    sagemaker.script(fault, fault)
    client = gateway.client()
    if stream_it:
        chunks = list(client.chat.completions.create(model="auto", messages=USER, stream=True))
        text = text_of([c.model_dump() for c in chunks])
    else:
        text = (
            client.chat.completions.create(model="auto", messages=USER).choices[0].message.content
        )
    assert text == "backup says: hello there"
    assert len(sagemaker.requests) == 2 and len(backup.requests) == 1
    assert gateway.records(1)[0].model == "backup"


def test_a_tgi_stream_without_usage_is_estimated(
    start: Callable[[str], Gateway], sagemaker: FakeSageMaker
) -> None:
    gateway = start("tgi")
    sagemaker.format = "tgi"
    chunks = list(
        gateway.client().chat.completions.create(model="auto", messages=USER, stream=True)
    )
    assert text_of([c.model_dump() for c in chunks]) == "sagemaker says: hello there"
    (record,) = gateway.records(1)
    assert record.estimated and record.output_tokens > 0 and record.cost_usd


def test_admin_policy_redacts_the_aws_keys(start: Callable[[str], Gateway]) -> None:
    gateway = start("openai")
    shown = httpx.get(
        f"{gateway.url}/admin/policy", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert shown.status_code == 200
    aws = shown.json()["policy"]["models"]["llama"]["aws"]
    assert aws["access_key_id"] == aws["secret_access_key"] == "[redacted]"
    assert aws["inference_component"] == "llama-ic-1"
    assert SECRET_KEY not in shown.text and ACCESS_KEY not in shown.text
