"""OpenAI's Responses API (``POST /v1/responses``) read into the Chat Completions pipeline.

A Responses request becomes one chat body: ``instructions`` a system message first (not kept
in the conversation's history: the API does not carry instructions into the next turn), then
the history of ``previous_response_id`` (loaded by the door), then the ``input`` items as chat
messages: ``message`` items (roles user, assistant, system, developer; text, image URL and
output text parts), ``function_call`` items as an assistant message's ``tool_calls`` (the
item's ``call_id`` is the tool call's id, whatever its origin: ``call_...``, ``toolu_...``),
``function_call_output`` items as ``tool`` messages. ``reasoning`` items are dropped: the chat
models this route reaches take no reasoning back, and the gateway never invents one.

The settings map one to one where Chat Completions has them: ``max_output_tokens`` ->
``max_tokens``, ``text.format`` -> ``response_format``, ``text.verbosity`` -> ``verbosity``,
``reasoning.effort`` -> ``reasoning_effort``, function ``tools`` and ``tool_choice``;
``temperature``, ``top_p``, ``user``, ``parallel_tool_calls``, ``service_tier``,
``prompt_cache_key``, ``prompt_cache_retention`` and ``safety_identifier`` pass under their own
names. ``metadata`` is only echoed back. Dropped as hints that change no answer:
``reasoning.summary`` (no reasoning items come back on this route), ``stream_options``
(obfuscation padding), ``truncation: "auto"`` (a conversation that fits is answered the same;
one that does not gets the model's context error instead of a silently shortened history).

Refused with a 400 naming the field, item or tool, never dropped: every other field
(``conversation``, ``prompt``, ``background: true``, ``top_logprobs``...), ``include`` values
other than ``reasoning.encrypted_content`` (vacuous here: no reasoning items), unknown item
types, files by id, and the tools only OpenAI can run (web search, file search, code
interpreter, computer use, image generation, MCP, shell, custom grammars).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

_PASSED = (
    "model",
    "temperature",
    "top_p",
    "user",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
)
"""Fields Chat Completions has under the same name and meaning."""
_READ = (
    "input",
    "instructions",
    "previous_response_id",
    "store",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "max_output_tokens",
    "reasoning",
    "metadata",
    "truncation",
    "include",
    "background",
)
"""Fields this module translates, checks or echoes."""
_FIELDS = frozenset(_PASSED + _READ)
_INCLUDABLE = frozenset({"reasoning.encrypted_content"})
"""``include`` values honoured: there are no reasoning items to carry encrypted content."""
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_IMAGE_DETAILS = frozenset({"auto", "low", "high"})


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A checked Responses request: its chat translation and what the Response echoes."""

    body: dict[str, Any]
    """The client's object, for the echo of its settings."""
    chat: dict[str, Any]
    """The chat body's fields other than ``messages``."""
    instructions: str | None
    messages: list[dict[str, Any]]
    """The ``input`` as chat messages (what the conversation's history keeps of this turn)."""
    previous_response_id: str | None
    store: bool
    stream: bool


def read_request(body: dict[str, Any]) -> ResponsesRequest:
    """Check and translate a Responses body; raises `BadRequest` naming what it cannot carry."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise BadRequest(
            f"The field {unknown[0]!r} is not supported by this gateway's Responses API: "
            "the chat models it routes to have no equivalent.",
            param=unknown[0],
            code="unsupported_parameter",
        )
    if body.get("background"):
        raise BadRequest(
            "background responses are not supported: the gateway answers while the request "
            "is open.",
            param="background",
            code="unsupported_parameter",
        )
    _check_include(body.get("include"))
    if body.get("input") is None:
        raise BadRequest("'input' is required.", param="input")
    chat = {k: body[k] for k in _PASSED if body.get(k) is not None}
    chat.update(_tool_fields(body))
    chat.update(_output_fields(body))
    stream = _typed(body, "stream", bool, False)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    instructions = _typed(body, "instructions", str, None)
    previous = _typed(body, "previous_response_id", str, None)
    return ResponsesRequest(
        body=body,
        chat=chat,
        instructions=instructions,
        messages=input_messages(body["input"]),
        previous_response_id=previous,
        store=_typed(body, "store", bool, True),
        stream=stream,
    )


def chat_body(request: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat body: instructions, then the earlier turns' messages, then this input."""
    system = [] if request.instructions is None else [_system(request.instructions)]
    return {**request.chat, "messages": [*system, *history, *request.messages]}


def _system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


def _typed(body: dict[str, Any], name: str, kind: type[Any], default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise BadRequest(f"{name!r} must be a {kind.__name__}.", param=name)
    return value


def _check_include(include: Any) -> None:
    if include is None:
        return
    if not isinstance(include, list):
        raise BadRequest("'include' must be a list.", param="include")
    for value in include:
        if value not in _INCLUDABLE:
            raise BadRequest(
                f"include value {value!r} is not supported by this gateway; it can include "
                f"only {sorted(_INCLUDABLE)}.",
                param="include",
                code="unsupported_parameter",
            )


def _tool_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in chat's shape."""
    tools = body.get("tools")
    if tools is None or tools == []:
        out: dict[str, Any] = {}
    elif isinstance(tools, list):
        out = {"tools": [_tool(tool, i) for i, tool in enumerate(tools)]}
        if body.get("parallel_tool_calls") is not None:
            # Chat refuses parallel_tool_calls without tools; without tools it means nothing.
            out["parallel_tool_calls"] = _typed(body, "parallel_tool_calls", bool, True)
    else:
        raise BadRequest("'tools' must be a list.", param="tools")
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise BadRequest("tool_choice needs the function's 'name'.", param="tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif choice is not None:
        raise BadRequest(
            f"tool_choice {choice!r} is not supported: use 'auto', 'none', 'required' or "
            "{'type': 'function', 'name': ...}.",
            param="tool_choice",
        )
    return out


def _tool(tool: Any, index: int) -> dict[str, Any]:
    param = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise BadRequest(f"{param} must be an object.", param=param)
    kind = tool.get("type")
    if kind != "function":
        raise BadRequest(
            f"The tool {kind!r} is not supported: the gateway relays function tools to the "
            "model, and cannot run OpenAI's built-in tools (web search, file search, code "
            "interpreter, computer use, image generation, MCP, shell) or custom tools.",
            param=f"{param}.type",
            code="unsupported_tool",
        )
    extra = sorted(k for k in tool if k not in _TOOL_KEYS and tool[k] is not None)
    if extra:
        raise BadRequest(
            f"{param}.{extra[0]} is not supported by this gateway.", param=f"{param}.{extra[0]}"
        )
    if not isinstance(tool.get("name"), str):
        raise BadRequest(f"{param} needs a 'name'.", param=f"{param}.name")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _output_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``max_output_tokens``, ``text`` and ``reasoning`` in chat's shape."""
    out: dict[str, Any] = {}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise BadRequest(
                "'max_output_tokens' must be a positive integer.", param="max_output_tokens"
            )
        out["max_tokens"] = limit
    text = _typed(body, "text", dict, {})
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    response_format = _response_format(text.get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    reasoning = _typed(body, "reasoning", dict, {})
    if reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        raise BadRequest("'truncation' must be 'auto' or 'disabled'.", param="truncation")
    return out


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise BadRequest(
                "text.format json_schema needs a 'name' and a 'schema' object.",
                param="text.format",
            )
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    raise BadRequest(
        "text.format.type must be 'text', 'json_object' or 'json_schema'.",
        param="text.format.type",
    )


def input_messages(value: Any) -> list[dict[str, Any]]:
    """Responses input (a string, or items) as chat messages; output items read the same way,
    so a Response's own output becomes the history the next turn continues."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequest("'input' must be a string or a list of items.", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{param} must be an object.", param=param)
        kind = item.get("type", "message")  # a message may leave out its type
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _add_call(messages, item, param)
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", param)
            content = _tool_output(item.get("output"), f"{param}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind != "reasoning":
            raise BadRequest(
                f"{param} is a {kind!r} item, which this gateway cannot send to a chat model; "
                "it takes message, function_call, function_call_output and reasoning items.",
                param=f"{param}.type",
                code="unsupported_item",
            )
    return messages


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{param}.{key} must be a string.", param=f"{param}.{key}")
    return value


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise BadRequest(
            f"{param}.role must be one of {sorted(_ROLES)}; got {role!r}.", param=f"{param}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"{param}.content must be a string or a list of parts.", param=param)
    return {"role": role, "content": _parts(content, f"{param}.content")}


def _parts(parts: list[Any], param: str) -> str | list[dict[str, Any]]:
    """Content parts in chat's shape; a lone text part becomes a plain string."""
    out = [_part(part, f"{param}[{i}]") for i, part in enumerate(parts)]
    if len(out) == 1 and out[0]["type"] == "text":
        text: str = out[0]["text"]
        return text
    return out


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _string(part, "text", param)}
    if kind == "refusal":
        return {"type": "refusal", "refusal": _string(part, "refusal", param)}
    if kind == "input_image":
        if part.get("file_id") is not None or not isinstance(part.get("image_url"), str):
            raise BadRequest(
                f"{param}: images are taken by URL or data URL ('image_url'); files by id need "
                "OpenAI's Files API, which the gateway does not have.",
                param=f"{param}.file_id",
                code="unsupported_content",
            )
        image = {"url": part["image_url"]}
        if part.get("detail") in _IMAGE_DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise BadRequest(
        f"{param}: content parts of type {kind!r} are not supported by this gateway "
        "(input_text, input_image by URL, output_text and refusal are).",
        param=f"{param}.type",
        code="unsupported_content",
    )


def _add_call(messages: list[dict[str, Any]], item: dict[str, Any], param: str) -> None:
    """A function_call item joins the assistant message before it (text or other calls of the
    same turn), as Chat Completions carries a turn's calls in one message."""
    call = {
        "id": _string(item, "call_id", param),
        "type": "function",
        "function": {
            "name": _string(item, "name", param),
            "arguments": _string(item, "arguments", param),
        },
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(output: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise BadRequest(f"{param} must be a string or a list of parts.", param=param)
    parts = _parts(output, param)
    if not isinstance(parts, str) and any(p["type"] != "text" for p in parts):
        raise BadRequest(
            f"{param}: a tool's output reaches a chat model as text only.",
            param=param,
            code="unsupported_content",
        )
    return parts
