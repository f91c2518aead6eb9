"""Anthropic's Messages API out: the pipeline's chat answers as Messages and stream events.

- `message`: a ``chat.completion`` to a Message.
- `StreamTranslator`: ``chat.completion.chunk`` objects to Anthropic's SSE events, as they
  arrive: ``message_start``, ``ping``, then each block started, its deltas, stopped (indices
  from 0, no gaps), ``message_delta`` with the stop reason and usage, ``message_stop``.
- `stop_reason`, `usage` and their inverses `finish_reason`, `chat_usage`: the two APIs'
  vocabularies, both ways. OpenAI's ``prompt_tokens`` includes cached tokens; Anthropic's
  ``input_tokens`` excludes them (total = input + cache_creation + cache_read).

The model's reasoning text (``reasoning_content``) is not sent back: a ``thinking`` block
needs a signature, and the gateway never invents one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from gateway.errors import GatewayError
from gateway.wire.anthropic import tool_id

# ------------------------------------------------------------------------------ answer types


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _Call(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Said(msgspec.Struct):
    """A completion's ``message`` or a chunk's ``delta``."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_Call] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Said | None = None
    delta: _Said | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    """vLLM's: the stop string that ended the answer (an int is a stop token's id)."""


class _Completion(msgspec.Struct):
    model: str = ""
    choices: list[_Choice] = []
    usage: _Usage | None = None


# ------------------------------------------------------------------------ the two vocabularies

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


def stop_reason(
    finish: str | None, *, tool_emitted: bool, matched: str | int | None, stops: Sequence[str]
) -> tuple[StopReason, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat answer.

    A length stop wins over a tool call (a cut call is not a call to run); ``tool_use`` only
    when a tool block was emitted; ``stop_sequence`` only when the upstream says which stop
    string matched (vLLM's ``stop_reason``): OpenAI's ``stop`` does not tell a stop string from
    the model's own end, and the string is cut from the text, so anything else is ``end_turn``.
    """
    if finish == "length":
        return "max_tokens", None
    if tool_emitted:
        return "tool_use", None
    if finish == "content_filter":
        return "refusal", None
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return "end_turn", None


_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(reason: str | None) -> str:
    """The chat ``finish_reason`` for an Anthropic ``stop_reason`` (``pause_turn`` and the
    like are ends of the turn, ``stop``)."""
    return _FINISH.get(reason or "", "stop")


def usage(prompt_tokens: int, completion_tokens: int, cached: int | None) -> dict[str, int]:
    """Anthropic's usage for chat counts. ``cached`` (of the prompt, None when the provider
    does not say) moves from ``input_tokens`` to ``cache_read_input_tokens``; chat providers
    report no cache writes, so ``cache_creation_input_tokens`` is 0 when they report caching."""
    if cached is None:
        return {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    return {
        "input_tokens": prompt_tokens - cached,
        "output_tokens": completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def chat_usage(anthropic_usage: dict[str, Any]) -> dict[str, Any]:
    """Chat usage for Anthropic's: the prompt is input + cache writes + cache reads; the reads
    are ``cached_tokens`` and the writes ``cache_write_tokens``, each priced at its own rate."""
    read = anthropic_usage.get("cache_read_input_tokens") or 0
    written = anthropic_usage.get("cache_creation_input_tokens") or 0
    prompt = (anthropic_usage.get("input_tokens") or 0) + written + read
    output = anthropic_usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
    }


def _usage_of(found: _Usage | None) -> dict[str, int]:
    if found is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = found.prompt_tokens_details
    cached = details.get("cached_tokens") if details else None
    return usage(
        found.prompt_tokens,
        found.completion_tokens,
        cached if isinstance(cached, int) and not isinstance(cached, bool) else None,
    )


# ------------------------------------------------------------------------------- answer side


def message_id(request_id: str) -> str:
    """The Message's id, from the gateway's request id (so logs and ledger find it)."""
    return "msg_" + request_id.removeprefix("req_")


def message(body: bytes, identifier: str, stops: Sequence[str]) -> dict[str, Any]:
    """A Message for a ``chat.completion`` (its first choice), with the id `message_id` gave."""
    completion = _decode(body)
    if completion is None or not completion.choices:
        raise GatewayError("The model's answer could not be read.", status=502)
    choice = completion.choices[0]
    said = choice.message or _Said()
    content: list[dict[str, Any]] = []
    text = (said.content or "") + (said.refusal or "")
    if text:
        content.append({"type": "text", "text": text})
    for call in said.tool_calls or []:
        function = call.function or _Function()
        content.append(
            {
                "type": "tool_use",
                "id": tool_id(call.id or f"call_{len(content)}"),
                "name": function.name or "",
                "input": _arguments(function.arguments),
            }
        )
    reason, sequence = stop_reason(
        "content_filter" if said.refusal else choice.finish_reason,
        tool_emitted=bool(said.tool_calls),
        matched=choice.stop_reason,
        stops=stops,
    )
    return {
        "id": identifier,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": _usage_of(completion.usage),
    }


def _arguments(arguments: str | None) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's ``input`` must be."""
    if not arguments:
        return {}
    try:
        found = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        found = None
    if not isinstance(found, dict):
        raise GatewayError(
            "The model called a tool with arguments that are not a JSON object.", status=502
        )
    return found


def _decode(data: bytes) -> _Completion | None:
    try:
        return msgspec.json.decode(data, type=_Completion)
    except msgspec.MsgspecError:
        return None


# ------------------------------------------------------------------------------------ streams


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames it."""
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


class StreamTranslator:
    """Chat chunks in, Anthropic events out, one chunk at a time.

    Text deltas go to a text block and each tool call's argument deltas to its ``tool_use``
    block as ``input_json_delta`` (so the concatenated ``partial_json`` is the call's
    arguments, as the non-streamed ``input``). A block is stopped when another begins; the
    last one, the stop reason and the usage (which chat sends after its last choice) wait for
    `finish`.
    """

    def __init__(self, identifier: str, stops: Sequence[str]) -> None:
        self._id = identifier
        self._stops = stops
        self._started = False
        self._blocks = 0
        self._open: int | str | None = None
        """The open block: ``"text"``, a chat tool call's index, or None."""
        self._tool_emitted = False
        self._refused = False
        self._finish: str | None = None
        self._matched: str | int | None = None
        self._usage: _Usage | None = None

    def feed(self, data: bytes) -> bytes:
        """The events for one chat chunk (none for a chunk that says nothing new)."""
        chunk = _decode(data)
        if chunk is None:
            return b""
        out = self._start(chunk.model)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            said = choice.delta or _Said()
            for text in (said.content, said.refusal):
                if text:
                    out += self._text(text)
            self._refused = self._refused or bool(said.refusal)
            for call in said.tool_calls or []:
                out += self._call(call)
            if choice.finish_reason is not None:
                self._finish, self._matched = choice.finish_reason, choice.stop_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        return out

    def finish(self) -> bytes:
        """The last block's stop, ``message_delta`` and ``message_stop``."""
        out = self._start("") + self._stop_open()
        reason, sequence = stop_reason(
            "content_filter" if self._refused else self._finish,
            tool_emitted=self._tool_emitted,
            matched=self._matched,
            stops=self._stops,
        )
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        out += event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": _usage_of(self._usage)},
        )
        return out + event("message_stop", {"type": "message_stop"})

    def _start(self, model: str) -> bytes:
        if self._started:
            return b""
        self._started = True
        start: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Chat streams count tokens only at their end; message_delta carries them.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": start}) + event(
            "ping", {"type": "ping"}
        )

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open != "text":
            out = self._open_block("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + self._delta(delta)

    def _call(self, call: _Call) -> bytes:
        function = call.function or _Function()
        out = b""
        if self._open != call.index:
            self._tool_emitted = True
            block = {
                "type": "tool_use",
                "id": tool_id(call.id or f"call_{self._blocks}"),
                "name": function.name or "",
                "input": {},
            }
            out = self._open_block(call.index, block)
        if function.arguments:
            out += self._delta({"type": "input_json_delta", "partial_json": function.arguments})
        return out

    def _open_block(self, which: int | str, block: dict[str, Any]) -> bytes:
        out = self._stop_open()
        self._open = which
        start = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        return out + event("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._blocks, "delta": delta}
        return event("content_block_delta", body)

    def _stop_open(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index, self._blocks = self._blocks, self._blocks + 1
        return event("content_block_stop", {"type": "content_block_stop", "index": index})
