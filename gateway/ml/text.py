"""The text that stands for a request: one definition, for serving and for training alike.

The semantic cache embeds it, the classifier reads its features, and the router's training
reads the same text from its data sets, so a model is always trained on what it will be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def request_text(messages: Sequence[Any]) -> str:
    """The last user message's text parts, joined by newlines and stripped; "" when there is no
    user message (such a request has no question to embed, so it is never cached). The rest of
    the conversation is the semantic cache's context fingerprint, not part of this text."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message).strip()
    return ""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message: a string content, or its ``text`` parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""
