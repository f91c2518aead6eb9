"""``provider: vertex`` end to end: the openai SDK -> the gateway -> the fake Vertex AI, whose
tokens google-auth gets by signing a service account's JWT for the fake token service. Gemini on
the OpenAI-compatible endpoint and Claude on rawPredict, streamed and not, with a tool loop, a
fallback after 529s, and the ledger's cost."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream
from tests.fakes.anthropic import Script
from tests.fakes.vertex import LOCATION, PROJECT, FakeVertex
from tests.integration.providers.test_anthropic import tool_loop
from tests.servers import module_fixtures

GEMINI = "google/gemini-2.5-flash"


_vertex, vertex = module_fixtures("vertex", FakeVertex)


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], vertex: FakeVertex, backup: FakeUpstream, tmp_path: Path
) -> Gateway:
    credentials = str(vertex.service_account(tmp_path))
    on_vertex = {
        "provider": "vertex",
        "base_url": vertex.base_url,
        "gcp": {"project": PROJECT, "location": LOCATION, "credentials_file": credentials},
        "fallbacks": ["backup"],
        "retries": {"max_attempts": 2, "budget_s": 5, "backoff_initial_s": 0.01},
    }
    claude_price = {"input_per_mtok": "3", "cached_input_per_mtok": "0.30"}
    claude_price |= {"cache_write_per_mtok": "3.75", "output_per_mtok": "15"}
    models = {  # JSON is YAML's flow style
        "gemini": on_vertex
        | {"model": GEMINI, "price": {"input_per_mtok": "0.30", "output_per_mtok": "2.50"}},
        "claude": on_vertex | {"model": "claude-sonnet-4-5@20250929", "price": claude_price},
        "backup": {
            "provider": "openai_compatible",
            "base_url": backup.base_url,
            "model": "upstream-backup",
            "price": {"input_per_mtok": "0.10", "output_per_mtok": "0.20"},
        },
    }
    policy = textwrap.dedent(f"""\
        version: 1
        models: {json.dumps(models)}
        routes:
          - {{name: default, to: gemini}}
        tenants:
          team-a: {{api_keys: ["{TENANT_KEY}"]}}
        """)
    return start_gateway(policy)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_answers_a_tool_call_and_its_result(
    gateway: Gateway, vertex: FakeVertex, stream: bool
) -> None:
    call_id, arguments, final = tool_loop(gateway.client(), stream, model="gemini")
    assert json.loads(arguments) == {"echo": "find kiwi"} and call_id
    assert "a green fruit" in final
    assert [r.body["model"] for r in vertex.gemini.requests] == [GEMINI, GEMINI]
    assert vertex.tokens_issued == 1 and vertex.refused == 0


@pytest.mark.parametrize("stream", [False, True])
def test_claude_on_vertex_runs_a_tool_loop(
    gateway: Gateway, vertex: FakeVertex, stream: bool
) -> None:
    call_id, arguments, final = tool_loop(gateway.client(), stream, model="claude")
    assert (call_id, json.loads(arguments)) == ("toolu_01A", {"echo": "find kiwi"})
    assert final == "result: a green fruit"
    assert vertex.claude.problems == []
    assert vertex.claude_models == ["claude-sonnet-4-5@20250929"] * 2
    assert [r.body.get("stream", False) for r in vertex.claude.requests] == [stream, False]
    assert vertex.claude.requests[1].body["messages"][-1]["content"][0]["type"] == "tool_result"


def test_claude_on_vertex_falls_back_after_529s(
    gateway: Gateway, vertex: FakeVertex, backup: FakeUpstream
) -> None:
    vertex.claude.script(Script(status=529), Script(status=529))
    answer = gateway.client().chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hello"}]
    )
    assert (answer.choices[0].message.content or "").startswith("backup says: hello")
    assert len(vertex.claude.requests) == 2 and len(backup.requests) == 1


def test_the_ledger_prices_each_path(gateway: Gateway, vertex: FakeVertex) -> None:
    vertex.claude.script(Script(cache_creation=1000), Script(cache_read=2000))
    client = gateway.client()
    answers = [
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"count {i}"}]
        )
        for i, model in enumerate(["claude", "claude", "gemini"])
    ]
    write, read, gemini = gateway.records(3)
    per_mtok = Decimal(1_000_000)
    inputs = [len(json.dumps(r.body["messages"]).split()) for r in vertex.claude.requests]
    assert write.cost_usd == (inputs[0] * 3 + 1000 * Decimal("3.75") + 7 * 15) / per_mtok
    assert read.cost_usd == (inputs[1] * 3 + 2000 * Decimal("0.30") + 7 * 15) / per_mtok
    usage = answers[2].usage
    assert usage is not None and gemini.model == "gemini"
    assert (
        gemini.cost_usd
        == (usage.prompt_tokens * Decimal("0.30") + usage.completion_tokens * Decimal("2.50"))
        / per_mtok
    )


def test_claude_on_vertex_golden_body_and_a_cache_hit_on_the_repeat(
    gateway: Gateway, vertex: FakeVertex
) -> None:
    """PITFALLS 3.9: the body Vertex wants, with the cache mark kept, so the repeat reads."""
    system = {
        "type": "text",
        "text": "A long shared preamble.",
        "cache_control": {"type": "ephemeral"},
    }
    usages = [
        gateway.client()
        .chat.completions.create(
            model="claude",
            messages=[{"role": "system", "content": [system]}, {"role": "user", "content": ask}],
            max_tokens=64,
            stop=["END"],
        )
        .usage
        for ask in ("first", "second")
    ]
    assert vertex.claude.requests[0].body == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "first"}]}],
        "system": [system],
        "stop_sequences": ["END"],
    }
    written, read = (
        u.prompt_tokens_details.cached_tokens for u in usages if u and u.prompt_tokens_details
    )
    assert written == 0 and read > 0
    first, second = gateway.records(2)
    assert (first.cached_input_tokens, second.cached_input_tokens) == (0, read)
