"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 that checks what it receives.

It checks ``x-api-key`` and ``anthropic-version`` (or, for Claude on Vertex, behind
`tests.fakes.vertex`, the ``anthropic_version`` of the body and the absence of ``model``), and
the body's shape as the real API does: ``max_tokens`` present, turns alternating from a user
turn, no blank text blocks, every ``tool_result`` answering a ``tool_use`` of the turn before.
A shape error is answered 400 ``invalid_request_error`` and kept in `FakeAnthropic.problems`.

Answers are deterministic: with ``tools`` and a user's text last, a ``tool_use`` of the first
tool with input ``{"echo": <text>}``; after a ``tool_result``, ``"result: <content>"``; else
``"<name> says: <text>"``. Streams are sent in the recorded wire format (``event:`` and
``data:`` lines, ``ping``, block start/delta/stop, ``message_delta``, ``message_stop``). A test
scripts the next requests (`Script`): an error status with Anthropic's error body and
``retry-after``, an ``error`` event after some events, and the usage's cache counters.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from tests.fake_upstream import Received
from tests.servers import ScriptedServer, read_headers
from tests.servers import read_body as read_raw_body

Send = Any
Receive = Any
KEY = "sk-ant-test-key"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}


@dataclass(frozen=True)
class Script:
    status: int | None = None
    """Answer this status with Anthropic's error body (529: ``overloaded_error``)."""
    retry_after: str | None = None
    error_after_events: int | None = None
    """Streams: send this many events, then (after a pause, so that those have passed on) an
    ``overloaded_error`` event."""
    cache_creation: int = 0
    cache_read: int = 0
    delay_s: float = 0.0
    """Wait this long before the response head (a slow first token)."""


@dataclass
class FakeAnthropic(ScriptedServer[Received, Script]):
    name: str = "claude"
    vertex: bool = False
    """Check the body as Claude on Vertex wants it (no ``model``, its ``anthropic_version``)."""
    problems: list[str] = field(default_factory=list)
    _cached: set[str] = field(default_factory=set)
    """Prompt prefixes written to the simulated prompt cache."""

    def __post_init__(self) -> None:
        super().__init__(Script())

    def _cleared(self) -> None:
        self.problems.clear()
        self._cached.clear()

    @property
    def base_url(self) -> str:
        return self.url

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        headers = read_headers(scope)
        if scope["path"] != "/v1/messages":
            await send_json(send, 404, error_body("not_found_error", scope["path"]))
        elif headers.get("x-api-key") != KEY or headers.get("anthropic-version") != "2023-06-01":
            await send_json(send, 401, error_body("authentication_error", "bad key or version"))
        else:
            await self.answer(scope["path"], headers, body, send)

    async def answer(
        self, path: str, headers: dict[str, str], body: dict[str, Any], send: Send
    ) -> None:
        """Check and answer one Messages body (the Vertex fake calls this after its checks)."""
        script = self.received(Received(path, headers, body))
        if problem := self._problem(body):
            with self._lock:
                self.problems.append(problem)
            await send_json(send, 400, error_body("invalid_request_error", problem))
            return
        await asyncio.sleep(script.delay_s)
        if script.status is not None:
            extra = [(b"retry-after", script.retry_after.encode())] if script.retry_after else []
            kind = ERROR_TYPES.get(script.status, "overloaded_error")
            await send_json(send, script.status, error_body(kind, "injected"), extra)
            return
        message = self._message(body, script)
        if body.get("stream"):
            await send_events(send, events(message, script.error_after_events))
        else:
            await send_json(send, 200, json.dumps(message).encode())

    def _problem(self, body: dict[str, Any]) -> str | None:
        """What the real API would reject in ``body``, or None."""
        if self.vertex and ("model" in body or body.get("anthropic_version") != VERTEX_VERSION):
            return "vertex: no model in the body, anthropic_version vertex-2023-10-16"
        if not self.vertex and not body.get("model"):
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        turns = body.get("messages") or []
        if not turns or turns[0]["role"] != "user":
            return "messages: the first turn must be the user's"
        asked: set[str] = set()
        for i, turn in enumerate(turns):
            if i and turn["role"] == turns[i - 1]["role"]:
                return f"messages.{i}: roles must alternate"
            blocks = turn["content"]
            if isinstance(blocks, str):
                continue
            for block in blocks:
                if block["type"] == "text" and not block["text"].strip():
                    return f"messages.{i}: text content blocks must be non-empty"
                if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                    return f"messages.{i}: tool_result answers no tool_use"
            asked = {b["id"] for b in blocks if b["type"] == "tool_use"}
        return None

    def _message(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        last = body["messages"][-1]["content"]
        blocks = [{"type": "text", "text": last}] if isinstance(last, str) else last
        results = [b for b in blocks if b["type"] == "tool_result"]
        text = " ".join(b["text"] for b in blocks if b["type"] == "text")
        content: list[dict[str, Any]]
        if results:
            content, stop = [_text(f"result: {results[0].get('content', '')}")], "end_turn"
        elif body.get("tools"):
            call = {"type": "tool_use", "id": "toolu_01A", "name": body["tools"][0]["name"]}
            content, stop = [call | {"input": {"echo": text}}], "tool_use"
        else:
            words = f"{self.name} says: {text}".split()
            stop = "max_tokens" if len(words) > body["max_tokens"] else "end_turn"
            content = [_text(" ".join(words[: body["max_tokens"]]))]
        written, read = self._prompt_cache(body)
        usage = {
            "input_tokens": len(json.dumps(body["messages"]).split()),
            "cache_creation_input_tokens": script.cache_creation or written,
            "cache_read_input_tokens": script.cache_read or read,
            "output_tokens": 7,
        }
        model = body.get("model", "claude-on-vertex")
        return {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def _prompt_cache(self, body: dict[str, Any]) -> tuple[int, int]:
        """Anthropic's prompt cache, simulated: the prefix (tools, system, messages) up to the
        last ``cache_control`` mark is written the first time it is seen, read after; its
        "tokens" are its words. No mark: nothing cached."""
        system = body.get("system")
        turns = [m["content"] for m in body["messages"] if isinstance(m["content"], list)]
        blocks = [*body.get("tools", []), *(system if isinstance(system, list) else [])]
        blocks += [block for turn in turns for block in turn]
        marks = [i for i, block in enumerate(blocks) if "cache_control" in block]
        if not marks:
            return 0, 0
        prefix = json.dumps(blocks[: marks[-1] + 1], sort_keys=True)
        with self._lock:
            seen = prefix in self._cached
            self._cached.add(prefix)
        tokens = len(prefix.split())
        return (0, tokens) if seen else (tokens, 0)


VERTEX_VERSION = "vertex-2023-10-16"


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def events(message: dict[str, Any], error_after: int | None = None) -> list[bytes]:
    """``message`` as the SSE events Anthropic streams it in (text in pieces of a word, tool
    input in two JSON pieces); an ``overloaded_error`` event after ``error_after`` events."""
    start_usage = {**message["usage"], "output_tokens": 1}
    found: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"message": {**message, "content": [], "stop_reason": None} | {"usage": start_usage}},
        ),
        ("ping", {}),
    ]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            found.append(("content_block_start", {"index": i, "content_block": _text("")}))
            for word in block["text"].split(" "):
                delta = {"type": "text_delta", "text": word + " "}
                found.append(("content_block_delta", {"index": i, "delta": delta}))
        else:
            found.append(
                ("content_block_start", {"index": i, "content_block": {**block, "input": {}}})
            )
            arguments = json.dumps(block["input"])
            for piece in (arguments[:5], arguments[5:]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                found.append(("content_block_delta", {"index": i, "delta": delta}))
        found.append(("content_block_stop", {"index": i}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    found.append(("message_delta", {"delta": stop, "usage": {"output_tokens": 7}}))
    found.append(("message_stop", {}))
    if error_after is not None:
        error = {"type": "overloaded_error", "message": "Overloaded"}
        found = [*found[:error_after], ("error", {"error": error})]
    return [
        f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
        for kind, data in found
    ]


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


async def read_body(receive: Receive) -> dict[str, Any]:
    raw = await read_raw_body(receive)
    return json.loads(raw) if raw else {}


async def send_json(
    send: Send, status: int, content: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", b"application/json"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": content})


async def send_events(send: Send, chunks: list[bytes]) -> None:
    head = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    for chunk in chunks:
        if chunk.startswith(b"event: error"):
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
