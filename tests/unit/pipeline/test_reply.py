"""What the gateway reads of a model's answer, streamed or not: one parse."""

from __future__ import annotations

import json

import pytest

from gateway.pipeline.reply import Answer, StreamMeter
from gateway.providers import Usage


def chunk(
    content: str | None = None, usage: dict[str, int] | None = None, finished: bool = False
) -> bytes:
    choices = (
        []
        if usage
        else [
            {
                "index": 0,
                "delta": {"content": content} if content else {},
                "finish_reason": "stop" if finished else None,
            }
        ]
    )
    return json.dumps(
        {"object": "chat.completion.chunk", "choices": choices, "usage": usage}
    ).encode()


USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


@pytest.mark.parametrize("wants_usage", [True, False])
def test_stream_meter_keeps_usage_and_hides_it_unless_asked(wants_usage: bool) -> None:
    meter = StreamMeter(wants_usage)
    batch = [chunk("Hé"), chunk(" there"), chunk(finished=True), chunk(usage=USAGE)]
    shown = meter.passed(batch)
    assert shown == (batch if wants_usage else batch[:3])
    assert meter.answer.usage == Usage(10, 3, 13)
    assert meter.answer.text == "Hé there"


def test_stream_meter_passes_unknown_events_on() -> None:
    meter = StreamMeter(False)
    assert meter.forward(b'{"error": {"message": "x"}}')
    assert meter.forward(b"not json")
    assert meter.answer.usage is None


def test_reply_usage() -> None:
    body = json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": "four"}}], "usage": USAGE}
    ).encode()
    answer = Answer.of_body(body)
    assert (answer.usage, answer.text) == (Usage(10, 3, 13), "four")
    no_usage = json.dumps({"choices": [{"message": {"content": "four"}}]}).encode()
    answer = Answer.of_body(no_usage)
    assert (answer.usage, answer.text) == (None, "four")
    assert Answer.of_body(b"not json").usage is None


def test_a_streamed_and_a_whole_answer_read_alike() -> None:
    meter = StreamMeter(wants_usage=True)
    for c in [chunk("Hé"), chunk(" there"), chunk(finished=True), chunk(usage=USAGE)]:
        meter.forward(c)
    whole = Answer.of_body(
        json.dumps(
            {
                "choices": [{"message": {"content": "Hé there"}, "finish_reason": "stop"}],
                "usage": USAGE,
            }
        ).encode()
    )
    streamed = meter.answer
    assert (streamed.text, streamed.usage, streamed.finish_reason) == (
        whole.text,
        whole.usage,
        whole.finish_reason,
    )
    assert streamed.cacheable and whole.cacheable


def test_the_service_tier_is_read_from_replies_and_chunks() -> None:
    body = {"choices": [{"message": {"content": "x"}}], "service_tier": "priority"}
    assert Answer.of_body(json.dumps(body).encode()).service_tier == "priority"
    meter = StreamMeter(wants_usage=False)
    meter.forward(json.dumps({"choices": [], "service_tier": "flex"}).encode())
    assert meter.answer.service_tier == "flex"
