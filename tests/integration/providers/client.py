"""What the provider tests send a running gateway with the openai SDK."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}},
        },
    }
]
"""One tool, whose arguments the fakes fill with ``{"echo": <the user's text>}``."""


def stream_chunks(client: openai.OpenAI, messages: Any, **extra: Any) -> list[ChatCompletionChunk]:
    """A streamed answer's chunks (``model: auto``), the last one with the usage."""
    return list(
        client.chat.completions.create(
            model="auto",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
    )
