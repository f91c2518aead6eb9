"""Anthropic's Messages API, translated to and from the pipeline's Chat Completions shape.

Pure functions and one small stateful class, no I/O:

- `chat_body`: a Messages request (``POST /v1/messages``, or ``/count_tokens``) to a Chat
  Completions object. ``system`` becomes a system message (its blocks kept as text parts),
  ``tool_result`` blocks become ``tool`` messages (in order, before the rest of their user
  turn), ``tool_use`` blocks an assistant's ``tool_calls``, images ``image_url`` parts. What a
  chat model cannot be asked is refused with a `BadRequest` naming the field; what only hints
  (``cache_control``, ``citations`` of earlier answers, ``service_tier``, ``metadata`` other
  than ``user_id``) is dropped; unsigned ``thinking`` blocks of earlier turns are dropped too,
  since a chat model cannot take them back and a signature is never invented.
- `message`: a ``chat.completion`` to a Message.
- `StreamTranslator`: ``chat.completion.chunk`` objects to Anthropic's SSE events, as they
  arrive: ``message_start``, ``ping``, then each block started, its deltas, stopped (indices
  from 0, no gaps), ``message_delta`` with the stop reason and usage, ``message_stop``.
- `stop_reason`, `usage` and their inverses `finish_reason`, `chat_usage`: the two APIs'
  vocabularies, both ways. OpenAI's ``prompt_tokens`` includes cached tokens; Anthropic's
  ``input_tokens`` excludes them (total = input + cache_creation + cache_read).

Tool ids pass unchanged when they fit ``^[a-zA-Z0-9_-]+$`` (``toolu_...``, ``call_...``); any
other id is rewritten to ``toolu_<digest>`` the same way wherever it occurs (a ``tool_use``,
the ``tool_result`` answering it, an upstream's call), so pairs still match.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import BadRequest, GatewayError

# ------------------------------------------------------------------------------ request types

Hint = Any
"""A field that only hints (``cache_control``, ``citations``): accepted, never forwarded."""


class _Text(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str
    cache_control: Hint = None
    citations: Hint = None


class _Base64(msgspec.Struct, tag_field="type", tag="base64", forbid_unknown_fields=True):
    media_type: str
    data: str


class _Url(msgspec.Struct, tag_field="type", tag="url", forbid_unknown_fields=True):
    url: str


class _Image(msgspec.Struct, tag_field="type", tag="image", forbid_unknown_fields=True):
    source: _Base64 | _Url
    cache_control: Hint = None


class _ToolUse(msgspec.Struct, tag_field="type", tag="tool_use", forbid_unknown_fields=True):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: Hint = None


class _ToolResult(msgspec.Struct, tag_field="type", tag="tool_result", forbid_unknown_fields=True):
    tool_use_id: str
    content: str | list[_Text | _Image] = ""
    is_error: bool = False
    cache_control: Hint = None


class _Thinking(msgspec.Struct, tag_field="type", tag="thinking", forbid_unknown_fields=True):
    thinking: str
    signature: str | None = None


class _Redacted(
    msgspec.Struct, tag_field="type", tag="redacted_thinking", forbid_unknown_fields=True
):
    data: str


_Block = _Text | _Image | _ToolUse | _ToolResult | _Thinking | _Redacted


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _Tool(msgspec.Struct, forbid_unknown_fields=True):
    """A client tool; Anthropic's server tools (``web_search_...``, ``bash_...``) have other
    types, which a chat model cannot run, so they fail here with their ``type`` named."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: Hint = None


class _Auto(msgspec.Struct, tag_field="type", tag="auto", forbid_unknown_fields=True):
    disable_parallel_tool_use: bool = False


class _AnyTool(msgspec.Struct, tag_field="type", tag="any", forbid_unknown_fields=True):
    disable_parallel_tool_use: bool = False


class _NamedTool(msgspec.Struct, tag_field="type", tag="tool", forbid_unknown_fields=True):
    name: str
    disable_parallel_tool_use: bool = False


class _NoTool(msgspec.Struct, tag_field="type", tag="none", forbid_unknown_fields=True):
    pass


class _Metadata(msgspec.Struct):
    user_id: str | None = None


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    """A Messages request; a field not listed here is refused (msgspec names it)."""

    model: str
    messages: list[_Message]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    system: str | list[_Text] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream: bool = False
    tools: list[_Tool] | None = None
    tool_choice: _Auto | _AnyTool | _NamedTool | _NoTool | None = None
    metadata: _Metadata | None = None
    thinking: dict[str, Any] | None = None
    service_tier: Hint = None
    cache_control: Hint = None


# ------------------------------------------------------------------------------- request side

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def tool_id(raw: str) -> str:
    """``raw`` when Anthropic and OpenAI both take it, else a stable ``toolu_`` rewrite."""
    if _TOOL_ID.match(raw):
        return raw
    return "toolu_" + hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def chat_body(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The Chat Completions object for a Messages request; raises `BadRequest` naming the
    field it cannot take. ``counting``: a ``count_tokens`` request, which has no
    ``max_tokens``."""
    try:
        request = msgspec.convert(body, _Request)
    except msgspec.ValidationError as exc:
        raise _refused(str(exc)) from exc
    if request.max_tokens is None and not counting:
        raise BadRequest("'max_tokens' is required.", param="max_tokens")
    if not request.messages:
        raise BadRequest("'messages' must contain at least one message.", param="messages")
    if request.thinking is not None and request.thinking.get("type") != "disabled":
        raise BadRequest(
            "'thinking' cannot be enabled: the gateway's models are chat models without an "
            'extended-thinking budget (send {"type": "disabled"} or leave it out).',
            param="thinking",
        )
    chat: dict[str, Any] = {"model": request.model, "messages": _messages(request)}
    if request.max_tokens is not None:
        chat["max_tokens"] = request.max_tokens
    optional = {
        "stop": request.stop_sequences,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "user": request.metadata.user_id if request.metadata else None,
    }
    chat.update((k, v) for k, v in optional.items() if v is not None)
    if request.tools:
        chat["tools"] = [_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        _tool_choice(chat, request.tool_choice)
    if request.stream and not counting:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _refused(text: str) -> BadRequest:
    """msgspec's complaint as a `BadRequest` naming the field: it says ``... - at `$.path```
    and, for a field it does not know, ``Object contains unknown field `name```."""
    where = text.rsplit("`$.", 1)[1].rstrip("`") if "`$." in text else ""
    if "unknown field `" in text:
        name = text.split("unknown field `", 1)[1].split("`", 1)[0]
        field = f"{where}.{name}" if where else name
        return BadRequest(
            f"The field '{field}' is not supported: the gateway cannot send it to its chat models.",
            param=field,
        )
    return BadRequest(f"Invalid Messages request: {text}", param=where or None)


def _messages(request: _Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(request.system, str):
        out.append({"role": "system", "content": request.system})
    elif request.system:
        out.append({"role": "system", "content": _text_content(request.system)})
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "user":
            out.extend(_user(message.content, f"messages[{i}].content"))
        else:
            out.append(_assistant(message.content, f"messages[{i}].content"))
    return out


def _text_content(blocks: Sequence[_Text]) -> str | list[dict[str, Any]]:
    """One text block is its string; several stay separate text parts."""
    if len(blocks) == 1:
        return blocks[0].text
    return [{"type": "text", "text": b.text} for b in blocks]


def _user(blocks: list[_Block], path: str) -> list[dict[str, Any]]:
    """The tool results first, one ``tool`` message each in order (chat wants them right
    after the assistant's calls), then the rest of the turn as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if isinstance(block, _ToolResult):
            text = _result_text(block, f"{path}[{j}].content")
            results.append(
                {"role": "tool", "tool_call_id": tool_id(block.tool_use_id), "content": text}
            )
        elif isinstance(block, _Text):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, _Image):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        elif not isinstance(block, _Thinking | _Redacted):
            raise BadRequest(
                f"{path}[{j}]: a user message cannot hold a '{_kind(block)}' block.",
                param=f"{path}[{j}]",
            )
    if not parts:
        return results
    only_text = all(p["type"] == "text" for p in parts)
    content: Any = parts[0]["text"] if only_text and len(parts) == 1 else parts
    return [*results, {"role": "user", "content": content}]


def _kind(block: _Block) -> str:
    return str(type(block).__struct_config__.tag)


def _result_text(block: _ToolResult, path: str) -> str:
    """A tool result's text blocks joined; an error result says so (chat has no flag)."""
    if isinstance(block.content, str):
        text = block.content
    else:
        for k, part in enumerate(block.content):
            if isinstance(part, _Image):
                raise BadRequest(
                    f"{path}[{k}]: images inside a tool_result cannot be sent to a chat model's "
                    "tool message.",
                    param=f"{path}[{k}]",
                )
        text = "\n".join(p.text for p in block.content if isinstance(p, _Text))
    return f"Error: {text}" if block.is_error else text


def _image_url(block: _Image) -> str:
    source = block.source
    if isinstance(source, _Url):
        return source.url
    return f"data:{source.media_type};base64,{source.data}"


def _assistant(blocks: list[_Block], path: str) -> dict[str, Any]:
    """Text joined, ``tool_use`` as ``tool_calls``; thinking blocks dropped (see the module)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if isinstance(block, _Text):
            texts.append(block.text)
        elif isinstance(block, _ToolUse):
            arguments = msgspec.json.encode(block.input).decode()
            function = {"name": block.name, "arguments": arguments}
            calls.append({"id": tool_id(block.id), "type": "function", "function": function})
        elif not isinstance(block, _Thinking | _Redacted):
            raise BadRequest(
                f"{path}[{j}]: an assistant message cannot hold a '{_kind(block)}' block.",
                param=f"{path}[{j}]",
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
        message["content"] = message["content"] or None
    return message


def _tool(tool: _Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(chat: dict[str, Any], choice: _Auto | _AnyTool | _NamedTool | _NoTool) -> None:
    if isinstance(choice, _NoTool):
        chat["tool_choice"] = "none"
        return
    if isinstance(choice, _NamedTool):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        chat["tool_choice"] = "required" if isinstance(choice, _AnyTool) else "auto"
    if choice.disable_parallel_tool_use and "tools" in chat:
        chat["parallel_tool_calls"] = False


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
    """Chat usage for Anthropic's: the prompt is input + cache writes + cache reads."""
    read = anthropic_usage.get("cache_read_input_tokens") or 0
    prompt = anthropic_usage["input_tokens"] + (
        anthropic_usage.get("cache_creation_input_tokens") or 0
    )
    prompt += read
    output = anthropic_usage["output_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
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


def message(body: bytes, message_id: str, stops: Sequence[str]) -> dict[str, Any]:
    """A Message for a ``chat.completion`` (its first choice)."""
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
        "id": message_id,
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

    def __init__(self, message_id: str, stops: Sequence[str]) -> None:
        self._id = message_id
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
