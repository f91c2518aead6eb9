"""Anthropic's Messages API in: a Messages request as the pipeline's Chat Completions object.

`chat_body` translates ``POST /v1/messages`` (and ``/count_tokens``) bodies. ``system``
becomes a system message (its blocks kept as text parts), ``tool_result`` blocks become
``tool`` messages (in order, before the rest of their user turn), ``tool_use`` blocks an
assistant's ``tool_calls``, images ``image_url`` parts, ``stop_sequences`` ``stop``,
``metadata.user_id`` ``user``, ``top_k`` ``top_k`` (vLLM's extension). What a chat model
cannot be asked is refused with a `BadRequest` naming the field; what only hints
(``cache_control``, ``citations`` of earlier answers, ``service_tier``, ``metadata`` other than
``user_id``) is dropped; ``thinking`` and ``redacted_thinking`` blocks of earlier turns are
dropped too, since a chat model cannot take them back and a signature is never invented.
The answer's way back is `gateway.wire.anthropic_output`.

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

from gateway.errors import BadRequest

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
    strict: bool | None = None
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
        _check_tools(request.tools)
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


MAX_TOOLS = 128
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""OpenAI's limits on a request's tools and on a function's name, which chat servers share;
Claude Code's MCP tool sets can pass both (PITFALLS 1.12), so they are refused here, by name,
rather than by whichever model is chosen (or not at all, by a server that does not check)."""


def _check_tools(tools: Sequence[_Tool]) -> None:
    if len(tools) > MAX_TOOLS:
        raise BadRequest(
            f"{len(tools)} tools: a chat model takes at most {MAX_TOOLS}.", param="tools"
        )
    for i, tool in enumerate(tools):
        if not _FUNCTION_NAME.match(tool.name):
            raise BadRequest(
                f"'tools[{i}].name' ({tool.name!r}) cannot be sent to a chat model: a tool "
                "name is 1 to 64 letters, digits, '_' or '-'.",
                param=f"tools[{i}].name",
            )


def _tool(tool: _Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
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
