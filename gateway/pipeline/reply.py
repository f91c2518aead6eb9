"""What the gateway reads of a model's answer: one typed parse, for replies and streams alike.

A provider's bytes go to the client untouched; the gateway decodes only the parts it acts on
(usage for the ledger; the text, finish reason and upstream model for the cache) into one
`Answer`, folding in either a whole ``chat.completion`` or each ``chat.completion.chunk`` of a
stream as it passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.providers import Usage

_CACHEABLE_FINISH = ("stop", "length")


class _Message(msgspec.Struct):
    """A completion's ``message`` or a chunk's ``delta``."""

    content: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    """A ``chat.completion`` or a ``chat.completion.chunk``: the fields the gateway reads."""

    model: str = ""
    choices: list[_Choice] = []
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


@dataclass(slots=True)
class Answer:
    """A model's answer as far as the gateway reads it."""

    usage: Usage | None = None
    pieces: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    upstream_model: str = ""
    """The ``model`` the provider put in its response."""
    system_fingerprint: str | None = None
    plain_text: bool = True
    """One choice of text only (no tool calls, no other choices): only such answers are cached."""
    service_tier: str | None = None
    """The tier the provider says it served the answer in (it prices the answer)."""

    @classmethod
    def of_body(cls, body: bytes) -> Answer:
        """A non-streamed answer (an undecodable body reads as an empty, uncacheable answer)."""
        answer = cls()
        completion = _decode(body)
        if completion is None or len(completion.choices) != 1:
            answer.plain_text = False
        if completion is not None:
            answer.fold(completion, "message")
        return answer

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def cacheable(self) -> bool:
        """Complete plain text: a stop or a length limit ended it."""
        return self.plain_text and self.finish_reason in _CACHEABLE_FINISH

    def fold(self, completion: _Completion, part: str) -> None:
        """Add a completion (``part="message"``) or a stream chunk (``part="delta"``)."""
        self.upstream_model = completion.model or self.upstream_model
        self.system_fingerprint = completion.system_fingerprint or self.system_fingerprint
        self.service_tier = completion.service_tier or self.service_tier
        if completion.usage is not None:
            self.usage = completion.usage
        for choice in completion.choices:
            message = choice.message if part == "message" else choice.delta
            if part == "message" and (message is None or message.content is None):
                self.plain_text = False
            message = message or _Message()
            if choice.index != 0 or message.tool_calls or message.function_call:
                self.plain_text = False
            if message.content:
                self.pieces.append(message.content)
            self.finish_reason = choice.finish_reason or self.finish_reason


@dataclass(slots=True)
class StreamMeter:
    """Reads a stream's chunks as they pass, into one `Answer`."""

    wants_usage: bool
    """The client asked for the usage chunk; the gateway always asks upstream for it."""
    answer: Answer = field(default_factory=Answer)

    def passed(self, batch: list[bytes]) -> list[bytes]:
        """Read the chunks of ``batch``; those the client gets, in order."""
        forward = self.forward
        return [chunk for chunk in batch if forward(chunk)]

    def forward(self, chunk: bytes) -> bool:
        """Read ``chunk``; False when the client must not see it (usage it did not ask for)."""
        completion = _decode(chunk)
        if completion is None:
            return True  # not a completion chunk (an error event, say): pass it on untouched
        self.answer.fold(completion, "delta")
        return self.wants_usage or completion.usage is None or bool(completion.choices)


def _decode(data: bytes) -> _Completion | None:
    try:
        return msgspec.json.decode(data, type=_Completion)
    except msgspec.MsgspecError:
        return None
