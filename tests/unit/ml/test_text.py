"""The one text that stands for a request, for the semantic cache and the classifier alike."""

from __future__ import annotations

from gateway.ml.text import message_text, request_text


def test_request_text_is_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
    ]
    assert request_text(messages) == "a"


def test_request_text_joins_text_parts_and_strips() -> None:
    parts = [{"type": "text", "text": " a"}, {"type": "text", "text": "b \n"}]
    assert request_text([{"role": "user", "content": parts}]) == "a\nb"
    assert message_text({"role": "user", "content": parts}) == " a\nb \n"


def test_no_user_message_has_no_request_text() -> None:
    assert request_text([]) == ""
    assert request_text([{"role": "system", "content": "only"}]) == ""
    assert request_text(["not a message"]) == ""
