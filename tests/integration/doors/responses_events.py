"""Reading and checking a Responses event stream, for the Responses door's tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.conftest import TENANT_KEY, Gateway

EVENT = TypeAdapter(ResponseStreamEvent)
RESPONSE = TypeAdapter(Response)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def post(gateway: Gateway, body: dict[str, Any], key: str = TENANT_KEY) -> httpx.Response:
    """``POST /v1/responses`` as it is sent, without an SDK in between."""
    return httpx.post(
        f"{gateway.url}/v1/responses",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def stream(
    gateway: Gateway, body: dict[str, Any], key: str = TENANT_KEY
) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    """The events of a streamed request, each checked: its ``event:`` line names its type and
    it validates against the openai SDK's event types."""
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/responses",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        event = json.loads(fields["data"])
        assert fields["event"] == event["type"]
        EVENT.validate_python(event)
        events.append(event)
    return response.headers, events


def check_lifecycle(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's grammar: created and in_progress first, sequence numbers from 0 counting
    up, one Response id throughout, every item opened before its events and closed once, one
    terminal event, last. Returns the final Response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e["type"] for e in events if e["type"] in TERMINAL] == [events[-1]["type"]]
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1
    opened: set[int] = set()
    closed: set[int] = set()
    for event in events[2:-1]:
        index = event.get("output_index")
        if event["type"] == "response.output_item.added":
            assert index not in opened
            opened.add(index)
        elif index is not None:
            assert index in opened and index not in closed, event
            if event["type"] == "response.output_item.done":
                closed.add(index)
    final: dict[str, Any] = events[-1]["response"]
    if final["status"] != "failed":
        assert opened == closed == set(range(len(final["output"])))
    RESPONSE.validate_python(final)
    return final
