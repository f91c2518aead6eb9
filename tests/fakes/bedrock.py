"""A fake Bedrock runtime: Converse and ConverseStream on a real HTTP server on 127.0.0.1.

Every request's SigV4 signature is recomputed with botocore's signer (a mismatch is AWS's 403
``InvalidSignatureException``); the body must be a Converse request without blank text blocks
and with alternating roles (a 400 ``ValidationException`` otherwise, as Bedrock answers).
Answers are deterministic: ``bedrock says: <last user text>``; with tools and a user's turn
last, a call of the first tool (or the one ``toolChoice`` names) with ``{"echo": <text>}``;
after a tool result, ``bedrock got the tool's result: <text>``. Usage counts words;
``cache`` sets the cache read and write counts reported. Streams are binary event-stream
frames. A test scripts faults (`BedrockFault`): an HTTP error with its AWS error type, or an
exception frame after some deltas.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tests.fakes.aws import (
    Signed,
    check_signature,
    event,
    exception,
    send_frames,
    send_json,
)
from tests.servers import ScriptedServer, read_body, read_headers


@dataclass(frozen=True)
class BedrockFault:
    status: int | None = None
    error_type: str = ""
    """The ``x-amzn-ErrorType`` sent with ``status``."""
    stream_exception: str | None = None
    """Streams: send this exception frame after ``after_deltas`` text deltas."""
    after_deltas: int = 0
    raw_stream: bytes | None = None
    """Streams: send these bytes as a 200 event stream instead of the answer's frames."""


@dataclass
class Received:
    model_id: str
    raw_path: str
    headers: dict[str, str]
    body: dict[str, Any]
    signed: Signed


class FakeBedrock(ScriptedServer[Received, BedrockFault]):
    def __init__(self) -> None:
        super().__init__(BedrockFault())
        self.cache = (0, 0)
        """cacheReadInputTokens and cacheWriteInputTokens in the next answers' usage."""
        self.split = 7
        """Stream frames go out cut this many bytes in."""

    def reset(self) -> None:
        super().reset()
        self.cache = (0, 0)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = await read_body(receive)
        headers = read_headers(scope)
        raw_path = scope["raw_path"].decode()
        parts = raw_path.split("/")
        if (
            len(parts) != 4
            or parts[1] != "model"
            or parts[3] not in ("converse", "converse-stream")
        ):
            await send_json(send, 404, {"message": f"no route {raw_path}"}, "UnknownOperation")
            return
        signed = check_signature(scope, headers, raw, "bedrock")
        body = json.loads(raw) if raw else {}
        fault = self.received(Received(unquote(parts[2]), raw_path, headers, body, signed))
        if not signed.ok:
            message = {"message": f"signature: {signed.problem}"}
            await send_json(send, 403, message, "InvalidSignatureException")
            return
        if problem := invalid(body):
            await send_json(send, 400, {"message": problem}, "ValidationException")
            return
        if fault.status is not None:
            message = {"message": f"injected {fault.error_type}"}
            await send_json(send, fault.status, message, fault.error_type)
            return
        if fault.raw_stream is not None:
            await send_frames(send, [fault.raw_stream])
            return
        answer = self._answer(body)
        if parts[3] == "converse":
            await send_json(send, 200, answer)
        else:
            await send_frames(send, stream_frames(answer, fault), self.split)

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        last = messages[-1]["content"]
        results = [b["toolResult"] for b in last if "toolResult" in b]
        user_text = " ".join(b["text"] for b in last if "text" in b)
        tools = (body.get("toolConfig") or {}).get("tools") or []
        if results:
            content = [{"text": f"bedrock got the tool's result: {_result_text(results[-1])}"}]
            stop = "end_turn"
        elif tools:
            choice = (body["toolConfig"].get("toolChoice") or {}).get("tool")
            name = choice["name"] if choice else tools[0]["toolSpec"]["name"]
            use = {"toolUseId": "tooluse_fake0001", "name": name, "input": {"echo": user_text}}
            content, stop = [{"toolUse": use}], "tool_use"
        else:
            content, stop = [{"text": f"bedrock says: {user_text}"}], "end_turn"
        words = sum(len(b.get("text", "").split()) for m in messages for b in m["content"])
        output = sum(len(json.dumps(b).split()) for b in content)
        read, written = self.cache
        usage = {"inputTokens": words, "outputTokens": output}
        usage |= {"totalTokens": words + output + read + written}
        if read or written:
            usage |= {"cacheReadInputTokens": read, "cacheWriteInputTokens": written}
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": usage,
            "metrics": {"latencyMs": 12},
        }


def _result_text(result: dict[str, Any]) -> str:
    return " ".join(c.get("text", json.dumps(c.get("json"))) for c in result["content"])


def invalid(body: dict[str, Any]) -> str | None:
    """What Bedrock's validation would reject: blank text, roles out of turn, bad tool ids."""
    roles = [m["role"] for m in body.get("messages", [])]
    if not roles or roles[0] != "user" or any(a == b for a, b in itertools.pairwise(roles)):
        return f"roles must alternate, starting with user: {roles}"
    blocks = [b for m in body["messages"] for b in m["content"]] + body.get("system", [])
    if any("text" in b and not b["text"].strip() for b in blocks):
        return "text content blocks must be non-empty"
    return None


def stream_frames(answer: dict[str, Any], fault: BedrockFault) -> list[bytes]:
    """The ConverseStream frames of ``answer``: text in word deltas without a
    ``contentBlockStart`` (as Bedrock sends text), a tool call opened by one and its input's
    JSON in two halves; the scripted exception frame where it falls."""
    frames = [event("messageStart", {"role": "assistant"})]
    deltas = 0
    for index, block in enumerate(answer["output"]["message"]["content"]):
        if "text" in block:
            words = block["text"].split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            for piece in pieces:
                if fault.stream_exception is not None and deltas == fault.after_deltas:
                    return [*frames, exception(fault.stream_exception, "injected")]
                frames.append(
                    event(
                        "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}
                    )
                )
                deltas += 1
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            text = json.dumps(use["input"])
            for half in (text[: len(text) // 2], text[len(text) // 2 :]):
                delta = {"toolUse": {"input": half}}
                frames.append(
                    event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
    if fault.stream_exception is not None:
        return [*frames, exception(fault.stream_exception, "injected")]
    frames.append(event("messageStop", {"stopReason": answer["stopReason"]}))
    metadata = {"usage": answer["usage"], "metrics": answer["metrics"]}
    return [*frames, event("metadata", metadata)]
