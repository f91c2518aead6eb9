"""A fake OpenAI-compatible upstream: a real HTTP server speaking the exact wire format.

It stands in for the paid hosted model only. Answers are deterministic ("<name> says: <last
user message>") so tests can tell which upstream answered what; usage counts whitespace-separated
words. An answer longer than ``max_tokens`` (or ``max_completion_tokens``) words is cut there
with ``finish_reason: "length"``; a ``stop`` string cuts it before the string. A request with
``tools`` whose last message is the user's is answered with a call of the first tool (or the one
``tool_choice`` names) whose arguments are ``{"echo": "<last user message>"}``; after a ``tool``
message, the answer echoes the tool's result. ``POST /v1/embeddings`` answers deterministic
8-dimensional vectors. A test scripts faults for the next requests (`FakeUpstream.script`): an
error status with an OpenAI error body and optional Retry-After, a slow first token, a dropped
stream, a hang. Every received request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from tests.servers import ScriptedServer, read_body, read_headers

Send = Any
Receive = Any


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    """Answer this status with an OpenAI error body."""
    retry_after: str | None = None
    delay_s: float = 0.0
    """Wait this long before the response head (a slow first token)."""
    drop_after_chunks: int | None = None
    """Streams: send this many chunks, then cut the connection."""
    chunk_delay_s: float = 0.0
    """Streams: wait this long before each chunk after the first."""
    body: bytes | None = None
    """Raw body to send with ``status`` instead of the OpenAI error object."""
    no_usage: bool = False
    """Answer without ``usage``, as some servers do."""
    long_line_after_chunks: int | None = None
    """Streams: send this many chunks, then one SSE line longer than a client's line buffer
    (aiohttp's limit is twice its read buffer, 512 KiB), then the rest."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream(ScriptedServer[Received, Fault]):
    name: str = "fake"
    disconnects: int = 0
    """Requests whose client went away before the end (during a delay, or a stream)."""
    metrics: str | None = None
    """Prometheus text served at ``GET /metrics`` (as a local engine does); None: 404."""

    def __post_init__(self) -> None:
        super().__init__(Fault())

    def _cleared(self) -> None:
        self.disconnects = 0
        self.metrics = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        raw = await read_body(receive)
        body = json.loads(raw) if raw else {}
        headers = read_headers(scope)
        self.record(Received(scope["path"], headers, body))
        if scope["path"] == "/metrics" and self.metrics is not None:
            await _send(send, 200, self.metrics.encode())
            return
        if scope["path"] == "/v1/embeddings":
            await _send(send, 200, json.dumps(embeddings(body)).encode())
            return
        if scope["path"] != "/v1/chat/completions":
            await _send(send, 404, _error_body(f"no route {scope['path']}", "not_found"))
            return
        fault = self.next_fault()
        if fault.delay_s and await self._left_during(receive, fault.delay_s):
            return
        if fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            content = (
                fault.body
                if fault.body is not None
                else _error_body(
                    f"{self.name} injected HTTP {fault.status}", f"injected_{fault.status}"
                )
            )
            await _send(send, fault.status, content, extra)
            return
        try:
            answer_text(self.name, body)
            tool_call(body)
        except (AttributeError, KeyError, TypeError, IndexError):  # a 400, as a server answers
            error = {"message": "unreadable messages", "type": "invalid_request_error"}
            error |= {"param": "messages", "code": None}
            await _send(send, 400, json.dumps({"error": error}).encode())
            return
        if fault.no_usage:
            body = {**body, "stream_options": None}
        if body.get("stream"):
            await self._stream(body, receive, send, fault)
        else:
            answer = completion(self.name, body)
            if fault.no_usage:
                del answer["usage"]
            await _send(send, 200, json.dumps(answer).encode())

    async def _left_during(self, receive: Receive, delay_s: float) -> bool:
        """Wait ``delay_s``; True (counted in `disconnects`) when the client left meanwhile."""
        gone = asyncio.ensure_future(receive())  # resolves with http.disconnect
        await asyncio.wait([gone], timeout=delay_s)
        if not gone.done():
            gone.cancel()
            return False
        with self._lock:
            self.disconnects += 1
        return True

    async def _stream(
        self, body: dict[str, Any], receive: Receive, send: Send, fault: Fault
    ) -> None:
        gone = asyncio.ensure_future(receive())  # resolves with http.disconnect
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i, chunk in enumerate(chunks(self.name, body)):
                if fault.drop_after_chunks is not None and i == fault.drop_after_chunks:
                    raise ConnectionAbortedError(
                        "fake upstream drops the stream"
                    )  # uvicorn cuts it
                if i and fault.chunk_delay_s:
                    await asyncio.wait([gone], timeout=fault.chunk_delay_s)
                if gone.done():
                    with self._lock:
                        self.disconnects += 1
                    return
                if fault.long_line_after_chunks == i:
                    line = b"data: " + b"x" * (1 << 21) + b"\n\n"
                    await send({"type": "http.response.body", "body": line, "more_body": True})
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _send(
    send: Send, status: int, content: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(extra or [])],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _error_body(message: str, code: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error"
                if code.startswith("injected_4")
                else "server_error",
                "param": None,
                "code": code,
            }
        }
    ).encode()


def answer_text(name: str, body: dict[str, Any]) -> str:
    messages = body["messages"]
    if messages and messages[-1].get("role") == "tool":
        return f"{name} got the tool's result: {_text(messages[-1].get('content'))}"
    user = [m for m in messages if m.get("role") == "user"]
    return f"{name} says: {_text(user[-1]['content'] if user else '')}"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return str(content or "")


def _answer(name: str, body: dict[str, Any]) -> tuple[str, str]:
    """The text of the answer and why it ended, as max_tokens and stop leave it."""
    text, finish = answer_text(name, body), "stop"
    stops = body.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop in text:
            text = text[: text.index(stop)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and len(text.split()) > limit:
        text, finish = " ".join(text.split(" ")[:limit]), "length"
    return text, finish


def tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The call the fake makes: with tools, to a user's message (not after a tool result)."""
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "none" or body["messages"][-1].get("role") == "tool":
        return None
    name = tools[0]["function"]["name"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = choice["function"]["name"]
    user = [m for m in body["messages"] if m.get("role") == "user"]
    arguments = json.dumps({"echo": _text(user[-1]["content"] if user else "")})
    function = {"name": name, "arguments": arguments}
    return {"id": "call_fake0001", "type": "function", "function": function}


def usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
    completion_tokens = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def service_tier(body: dict[str, Any]) -> str:
    """The tier OpenAI reports having served: the one asked for, else ``default``."""
    asked = body.get("service_tier")
    return asked if asked in ("flex", "priority", "scale") else "default"


def completion(name: str, body: dict[str, Any]) -> dict[str, Any]:
    call = tool_call(body)
    if call is None:
        text, finish = _answer(name, body)
        message = {"role": "assistant", "content": text, "refusal": None}
    else:
        text, finish = call["function"]["arguments"], "tool_calls"
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "service_tier": service_tier(body),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(body, text),
    }


def chunks(name: str, body: dict[str, Any]) -> list[bytes]:
    """The SSE events of a streamed answer, as OpenAI sends them."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "service_tier": service_tier(body),
    }
    if include_usage:
        base["usage"] = None
    call = tool_call(body)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    if call is None:
        text, finish = _answer(name, body)
        deltas += [{"content": piece} for piece in _pieces(text)]
    else:
        text, finish = call["function"]["arguments"], "tool_calls"
        half = len(text) // 2
        head = {**call, "function": {"name": call["function"]["name"], "arguments": text[:half]}}
        deltas.append({"tool_calls": [{"index": 0, **head}]})
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": text[half:]}}]})
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]}
        for d in deltas
    ]
    events.append(
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]}
    )
    if include_usage:
        events.append({**base, "choices": [], "usage": usage(body, text)})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings object: one deterministic vector per input (from its SHA-256),
    ``dimensions`` long when asked (else 8), as floats or base64 as asked."""
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else list(inputs or [])
    size = int(body.get("dimensions") or 8)
    data, tokens = [], 0
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += len(text.split())
        digest = hashlib.sha256(text.encode()).digest() * (size // 32 + 1)
        vector = [round(b / 255 - 0.5, 6) for b in digest[:size]]
        if body.get("encoding_format") == "base64":
            value: Any = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        else:
            value = vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
