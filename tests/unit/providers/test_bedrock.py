"""Chat Completions <-> Bedrock Converse: requests, answers, stream events, names, signing."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.policy.load import format_path, load_policy
from gateway.policy.models import AwsOptions
from gateway.providers import AttemptFailed
from gateway.providers import converse as wire
from gateway.providers.aws import Signer, error_status
from gateway.providers.bedrock import model_path

ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-5-haiku-20241022-v1:0"
)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def converse(body: dict[str, Any]) -> dict[str, Any]:
    return wire.request(body, wire.Names(body.get("tools") or []))


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Oslo"}') -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_parallel_tool_results_and_the_next_user_message_are_one_turn() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "cold"},
        {"role": "tool", "tool_call_id": "c2", "content": "warm"},
        {"role": "user", "content": "And so?"},
    ]
    out = converse({"messages": messages, "tools": [TOOL]})
    assert out["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "cold"}]}},
        {"toolResult": {"toolUseId": "c2", "content": [{"text": "warm"}]}},
        {"text": "And so?"},
    ]


@pytest.mark.parametrize("blank", ["", " ", "\n\t", None])
def test_blank_text_never_becomes_a_text_block(blank: str | None) -> None:
    messages = [
        {"role": "system", "content": blank},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": blank}],
        },
        {"role": "assistant", "content": blank, "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": blank},
    ]
    out = converse({"messages": messages, "tools": [TOOL]})
    blocks = [b for m in out["messages"] for b in m["content"]] + out.get("system", [])
    assert all(b["text"].strip() for b in blocks if "text" in b), blocks
    assert "system" not in out
    assert out["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {"city": "Oslo"}}}
    ]
    assert out["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"json": {}}]}}
    ]


@pytest.mark.parametrize(
    "name",
    [
        "get_weather",
        "mcp__github__create-issue",
        "a.b",
        "a:b",
        "weather/now",
        "x" * 64,
        "y" * 200,
        "naïve",
    ],
)
def test_names_are_sanitized_the_same_way_and_map_back(name: str) -> None:
    sent = wire.safe_name(name)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", sent)
    assert sent == wire.safe_name(name)  # symmetric: a call's id and its result's id agree
    names = wire.Names([{"type": "function", "function": {"name": name}}])
    assert names.back(sent) == name
    if re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
        assert sent == name


def test_names_rewritten_alike_stay_apart() -> None:
    assert len({wire.safe_name(n) for n in ["a.b", "a:b", "a/b", "a_b"]}) == 4
    long = ["z" * 70 + "1", "z" * 70 + "2"]
    assert wire.safe_name(long[0]) != wire.safe_name(long[1])


def test_an_odd_tool_call_id_is_the_same_in_the_call_and_its_result() -> None:
    odd = "call:01/ü" + "q" * 80
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call(odd, name="ns.tool")]},
        {"role": "tool", "tool_call_id": odd, "content": "ok"},
    ]
    tools = [{"type": "function", "function": {"name": "ns.tool"}}]
    out = converse({"messages": messages, "tools": tools})
    use = out["messages"][1]["content"][0]["toolUse"]
    result = out["messages"][2]["content"][0]["toolResult"]
    assert use["toolUseId"] == result["toolUseId"] == wire.safe_name(odd)
    assert use["name"] == out["toolConfig"]["tools"][0]["toolSpec"]["name"] != "ns.tool"


def test_answer_tool_names_come_back_as_the_client_wrote_them() -> None:
    names = wire.Names([{"type": "function", "function": {"name": "ns.tool"}}])
    answer = {
        "output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t1", "name": wire.safe_name("ns.tool"), "input": {"a": 1}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 3, "outputTokens": 4},
    }  # fmt: skip
    body = json.loads(wire.completion(answer, "m", "id1", names))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "ns.tool", "arguments": '{"a":1}'}}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tool": {"name": "get_weather"}},
        ),
        (None, None),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL], "tool_choice": choice}
    config = converse(body)["toolConfig"]
    assert config.get("toolChoice") == expected
    assert config["tools"] == [
        {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}
    ]


def test_tool_choice_none_leaves_the_tools_out() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL], "tool_choice": "none"}
    assert "toolConfig" not in converse(body)


def test_inference_config_and_images() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}],
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
    }
    out = converse(body)
    assert out["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert out["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}]},
            "messages[0].content[0].image_url",
        ),
    ],
)  # fmt: skip
def test_what_converse_cannot_express_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(AttemptFailed) as failed:
        converse(body)
    assert failed.value.status == 400 and failed.value.clients_fault
    assert failed.value.body is not None and failed.value.body["error"]["param"] == param


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    assert wire.finish_reason(stop) == finish


@pytest.mark.parametrize(
    ("converse_usage", "prompt", "cached", "written"),
    [
        ({"inputTokens": 10, "outputTokens": 5}, 10, 0, 0),
        ({"inputTokens": 10, "outputTokens": 5, "cacheWriteInputTokens": 1000}, 1010, 0, 1000),
        ({"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 1000}, 1010, 1000, 0),
    ],
)
def test_usage_counts_cache_reads_and_writes_in_the_prompt(
    converse_usage: dict[str, int], prompt: int, cached: int, written: int
) -> None:
    assert wire.usage(converse_usage) == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
    }


def test_stream_events_become_chat_chunks_keyed_by_block_index() -> None:
    names = wire.Names([{"type": "function", "function": {"name": "ns.tool"}}])
    translator = wire.StreamTranslator("m", "id1", names)
    sent = wire.safe_name("ns.tool")
    start_a = {"toolUse": {"toolUseId": "a", "name": sent}}
    start_b = {"toolUse": {"toolUseId": "b", "name": sent}}
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),  # no start
        ("contentBlockStart", {"contentBlockIndex": 2, "start": start_b}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": start_a}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"x":'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"y":2}'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": {"inputTokens": 4, "outputTokens": 9, "cacheReadInputTokens": 2}}),
    ]  # fmt: skip
    chunks = [json.loads(c) for k, p in events if (c := translator.event(k, p)) is not None]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "Hi"}
    assert translator.stopped
    arguments: dict[int, str] = {}
    ids: dict[int, str] = {}
    for delta in deltas:
        for tool_call in delta.get("tool_calls", []):
            arguments[tool_call["index"]] = (
                arguments.get(tool_call["index"], "") + tool_call["function"]["arguments"]
            )
            if "id" in tool_call:
                ids[tool_call["index"]] = tool_call["id"]
                assert tool_call["function"]["name"] == "ns.tool"
    assert (ids, arguments) == ({0: "b", 1: "a"}, {0: '{"y":2}', 1: '{"x":1}'})
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 6
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 2


def _canonical_path(url: str) -> str:
    request = AWSRequest(method="POST", url=url, data=b"{}", headers={})
    request.context["timestamp"] = "20260101T000000Z"
    auth = SigV4Auth(Credentials("AK", "SK"), "bedrock", "us-east-1")
    return str(auth.canonical_request(request).split("\n")[1])


def test_an_inference_profile_arn_is_one_path_segment_encoded_twice_when_signed() -> None:
    path = model_path(ARN) + "/converse"
    assert path.count("/") == 3 and ":" not in path
    url = f"https://bedrock-runtime.us-east-1.amazonaws.com{path}"
    # AWS's rule for every service but S3: each path segment URI-encoded twice.
    assert _canonical_path(url) == "/model/" + quote(quote(ARN, safe=""), safe="") + "/converse"


def test_the_signature_covers_the_fewest_headers() -> None:
    aws = AwsOptions(
        region="us-east-1", access_key_id="AK", secret_access_key="SK", session_token="T"
    )
    headers = asyncio.run(
        Signer(aws, "bedrock").sign(
            "https://h.example/model/m/converse", b"{}", {"content-type": "application/json"}
        )
    )
    found = re.search(r"SignedHeaders=([^,]+)", headers["Authorization"])
    assert found is not None
    assert found[1] == "content-type;host;x-amz-date;x-amz-security-token"
    assert headers["X-Amz-Security-Token"] == "T"


@pytest.mark.parametrize(
    ("error_type", "status", "expected"),
    [
        ("ThrottlingException", 400, 429),
        ("ModelNotReadyException:http://internal.amazon.com/", 429, 503),
        ("com.amazon.coral.service#ServiceUnavailableException", 500, 503),
        ("ValidationException", 400, 400),
        ("AccessDeniedException", 400, 403),
        ("SomethingNewException", 418, 418),
        (None, 502, 502),
    ],
)
def test_aws_error_types_decide_the_status(
    error_type: str | None, status: int, expected: int
) -> None:
    assert error_status(error_type, status) == expected


def test_literal_aws_keys_in_a_policy_are_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\n"
        "models:\n"
        "  claude:\n"
        "    provider: bedrock\n"
        "    model: anthropic.claude-3-haiku\n"
        "    aws: {region: us-east-1, access_key_id: '${AK}', secret_access_key: literal}\n"
        "routes:\n"
        "  - {name: default, to: claude}\n"
    )
    loaded = load_policy(path, {"AK": "AKIA0000"})
    assert [format_path(w.path) for w in loaded.warnings if "literal" in w.message] == [
        "$.models.claude.aws.secret_access_key"
    ]


def test_an_unknown_profile_is_a_failed_attempt_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    signer = Signer(AwsOptions(region="us-east-1", profile="nowhere"), "bedrock")
    with pytest.raises(AttemptFailed) as failed:
        asyncio.run(signer.sign("https://h.example/model/m/converse", b"{}", {}))
    assert failed.value.status == 401 and "nowhere" in failed.value.message
    assert not failed.value.retryable and not failed.value.clients_fault


def test_a_parts_cache_control_becomes_a_cache_point_after_it() -> None:
    long_text = {"type": "text", "text": "the manual ...", "cache_control": {"type": "ephemeral"}}
    body = {
        "messages": [
            {"role": "system", "content": [long_text]},
            {"role": "user", "content": [long_text, {"type": "text", "text": "question"}]},
        ]
    }
    out = converse(body)
    point = {"cachePoint": {"type": "default"}}
    assert out["system"] == [{"text": "the manual ..."}, point]
    assert out["messages"][0]["content"] == [
        {"text": "the manual ..."},
        point,
        {"text": "question"},
    ]
