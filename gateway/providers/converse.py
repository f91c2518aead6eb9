"""Chat Completions to Bedrock's Converse API and back: pure translation, no I/O.

What Converse demands and a chat body does not guarantee (PITFALLS 3.1-3.3, 3.7):

- No blank text block anywhere: an assistant turn that only calls tools carries no text, and a
  blank tool result is sent as an empty JSON result instead of blank text.
- Tool names and ``toolUseId`` match ``[a-zA-Z0-9_-]{1,64}``: anything else is rewritten the
  same way every time (`Names`), with a hash of the original so two names never meet, and the
  tool names in the answer are mapped back to the client's.
- Roles alternate: consecutive messages of one role (the ``tool`` results of parallel calls, a
  user message after them) become one turn.
- Usage in OpenAI's shape: Converse's ``inputTokens`` exclude cache reads and writes, OpenAI's
  ``prompt_tokens`` include them.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import msgspec

from gateway.providers import AttemptFailed
from gateway.providers.tgi import refused

_VALID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_IMAGE_URL = re.compile(r"data:image/(png|jpeg|jpg|gif|webp);base64,(.*)", re.S)
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
_REFUSED = ("logprobs", "top_logprobs", "logit_bias", "audio", "prediction")
"""Chat fields Converse has no counterpart for; sent with a value, the request is refused."""


def safe_name(name: str) -> str:
    """``name`` as Converse takes it: unchanged when it already fits, else its invalid
    characters replaced and cut, with 8 hex digits of its SHA-256 appended so that two names
    rewritten alike stay apart (``a.b`` and ``a:b``)."""
    if _VALID.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_INVALID_CHARS.sub('_', name)[:55]}_{digest}"


class Names:
    """The tool names of one request, as sent and as the client wrote them."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.original: dict[str, str] = {}
        for i, tool in enumerate(tools):
            name = str((tool.get("function") or {}).get("name", ""))
            sent = safe_name(name)
            if self.original.get(sent, name) != name:
                raise refused(f"tools[{i}].function.name", f"{name!r} collides with another")
            self.original[sent] = name

    def back(self, sent: str) -> str:
        """The client's name for a tool the model called."""
        return self.original.get(sent, sent)


def request(body: dict[str, Any], names: Names) -> dict[str, Any]:
    """The Converse request for a chat body (the model id goes in the URL)."""
    for field in _REFUSED:
        if body.get(field):
            raise refused(field, "Bedrock's Converse API has no such option")
    if (body.get("n") or 1) != 1:
        raise refused("n", "Converse answers one choice")
    if (body.get("response_format") or {}).get("type", "text") != "text":
        raise refused("response_format", "Converse has no JSON mode")
    system, messages = _conversation(body.get("messages") or [])
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    if config := _inference_config(body):
        out["inferenceConfig"] = config
    if tool_config := _tool_config(body, messages):
        out["toolConfig"] = tool_config
    return out


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    stop = body.get("stop")
    config = {
        "maxTokens": limit,
        "temperature": body.get("temperature"),
        "topP": body.get("top_p"),
        "stopSequences": [stop] if isinstance(stop, str) else stop,
    }
    return {k: v for k, v in config.items() if v is not None and v != []}


def _tool_config(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``toolConfig``; with ``tool_choice: none`` the tools are left out, unless the history
    holds tool blocks (Converse then requires them): the model is then merely not forced."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if not tools or (choice == "none" and not uses_tools):
        return None
    specs = []
    for tool in tools:
        function = tool.get("function") or {}
        spec: dict[str, Any] = {
            "name": safe_name(str(function.get("name", ""))),
            "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif isinstance(choice, dict):
        name = safe_name(str((choice.get("function") or {}).get("name", "")))
        config["toolChoice"] = {"tool": {"name": name}}
    return config


def _conversation(messages: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The system blocks and the alternating turns of a chat's messages."""
    system: list[Any] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system += _blocks(message.get("content"), f"messages[{i}].content", images=False)
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif role == "assistant":
            blocks = _blocks(message.get("content"), f"messages[{i}].content", images=False)
            blocks += [_tool_use(call, i) for call in message.get("tool_calls") or []]
        elif role == "user":
            blocks = _blocks(message.get("content"), f"messages[{i}].content", images=True)
        else:
            raise refused(f"messages[{i}].role", f"{role!r} has no Converse counterpart")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(content: Any, where: str, *, images: bool) -> list[dict[str, Any]]:
    """Content blocks of a message's ``content``, blank text left out; a part's
    ``cache_control`` becomes a ``cachePoint`` after its block."""
    if isinstance(content, str) or content is None:
        return [{"text": content}] if content and content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not str(part.get("text") or "").strip():
                continue
            blocks.append({"text": part["text"]})
        elif kind == "image_url" and images:
            blocks.append(_image(part.get("image_url"), f"{where}[{j}].image_url"))
        else:
            raise refused(f"{where}[{j}].type", f"{kind!r} parts are not translated here")
        if part.get("cache_control"):
            blocks.append({"cachePoint": {"type": "default"}})
    return blocks


def _image(image_url: Any, where: str) -> dict[str, Any]:
    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url or "")
    found = _IMAGE_URL.fullmatch(url)
    if found is None:
        raise refused(where, "Bedrock takes images as base64 data URLs only (no fetching)")
    kind = "jpeg" if found[1] == "jpg" else found[1]
    return {"image": {"format": kind, "source": {"bytes": found[2]}}}


def _tool_use(call: dict[str, Any], i: int) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = msgspec.json.decode(function.get("arguments") or "{}")
    except msgspec.DecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise refused(f"messages[{i}].tool_calls", "arguments must be a JSON object")
    name = safe_name(str(function.get("name", "")))
    return {"toolUse": {"toolUseId": safe_name(str(call.get("id", ""))), "name": name,
                        "input": arguments}}  # fmt: skip


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    else:
        text = str(content or "")
    result: list[dict[str, Any]] = [{"text": text}] if text.strip() else [{"json": {}}]
    tool_use_id = safe_name(str(message.get("tool_call_id", "")))
    return {"toolResult": {"toolUseId": tool_use_id, "content": result}}


def usage(converse: dict[str, Any]) -> dict[str, Any]:
    """Converse's usage in OpenAI's shape: prompt tokens include cache reads and writes."""
    read = int(converse.get("cacheReadInputTokens") or 0)
    written = int(converse.get("cacheWriteInputTokens") or 0)
    prompt = int(converse.get("inputTokens") or 0) + read + written
    completion = int(converse.get("outputTokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
    }


def finish_reason(stop_reason: str | None) -> str:
    return _FINISH.get(stop_reason or "", "stop")


def completion(answer: dict[str, Any], model: str, answer_id: str, names: Names) -> bytes:
    """A ``chat.completion`` for a Converse answer."""
    try:
        content = answer["output"]["message"]["content"]
        texts = [b["text"] for b in content if "text" in b]
        calls = [
            {
                "id": use["toolUseId"],
                "type": "function",
                "function": {
                    "name": names.back(use["name"]),
                    "arguments": msgspec.json.encode(use.get("input", {})).decode(),
                },
            }
            for use in (b["toolUse"] for b in content if "toolUse" in b)
        ]
    except (KeyError, TypeError) as exc:
        raise AttemptFailed("protocol", f"unreadable Converse answer: {exc!r}") from exc
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None}
    choice["finish_reason"] = finish_reason(answer.get("stopReason"))
    return msgspec.json.encode(
        {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage(answer.get("usage") or {}),
        }
    )


class StreamTranslator:
    """ConverseStream events to ``chat.completion.chunk`` payloads, one stream's state.

    Blocks are told apart by ``contentBlockIndex``, never by arrival order; text may come
    without a ``contentBlockStart``; a tool call's ``contentBlockStart`` opens it (id, name)
    and its input's partial JSON follows as argument deltas (PITFALLS 3.6). The role rides on
    the first chunk, so a stream that fails before its first delta has not started and can
    still fall back.
    """

    def __init__(self, model: str, answer_id: str, names: Names) -> None:
        self._base = {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._names = names
        self._tools: dict[int, int] = {}
        """contentBlockIndex -> the tool call's index in the chat stream."""
        self._role_sent = False
        self.stopped = False
        """``messageStop`` has come."""

    def event(self, kind: str, payload: dict[str, Any]) -> bytes | None:
        """The chat chunk for one event, if it makes one."""
        if kind == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if use is None:
                return None
            index = self._tools.setdefault(payload.get("contentBlockIndex", 0), len(self._tools))
            function = {"name": self._names.back(use["name"]), "arguments": ""}
            call = {"index": index, "id": use["toolUseId"], "type": "function"}
            return self._chunk({"tool_calls": [{**call, "function": function}]})
        if kind == "contentBlockDelta":
            return self._delta(payload.get("contentBlockIndex", 0), payload.get("delta") or {})
        if kind == "messageStop":
            self.stopped = True
            return self._chunk({}, finish_reason(payload.get("stopReason")))
        if kind == "metadata" and "usage" in payload:
            return msgspec.json.encode(
                {**self._base, "choices": [], "usage": usage(payload["usage"])}
            )
        return None  # messageStart, contentBlockStop: nothing to say yet

    def _delta(self, block: int, delta: dict[str, Any]) -> bytes | None:
        if "text" in delta:
            return self._chunk({"content": delta["text"]})
        if "toolUse" in delta:
            index = self._tools.setdefault(block, len(self._tools))
            arguments = str(delta["toolUse"].get("input", ""))
            return self._chunk(
                {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}
            )
        return None  # reasoning and citations are not part of a chat answer

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return msgspec.json.encode({**self._base, "choices": [choice]})
