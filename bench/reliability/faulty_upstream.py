"""A fake OpenAI upstream whose faults are switched over HTTP while load runs.

Answers are deterministic, so a client can tell a complete answer from a partial one:
the content is ``answer_for(last user message)``, sent as ``CHUNKS`` SSE chunks when streamed,
with ``usage`` counting whitespace-separated words.

Fault modes (``POST /control {"mode": ..., "share": 0.5}``; ``share`` of the requests meet it,
chosen at random, the rest are answered normally):

- ``ok``: no fault;
- ``5xx``: 500 with an OpenAI error body;
- ``hang``: wait ``hang_s`` (30 s) before the response head: the gateway's timeout must end it;
- ``drop``: streams send ``DROP_AFTER`` chunks then the connection is cut; non-streamed
  answers send half their body (with the full ``Content-Length``) then the connection is cut.

A user message containing ``[slow=S]`` is answered after S seconds, whatever the mode (for
concurrency limits). ``GET /stats`` returns the counts of requests per outcome and the most
requests in flight at once per ``[t=NAME]`` marker of the message.

Run: ``python bench/reliability/faulty_upstream.py --port N`` (a separate process, so that its
CPU is not the load generator's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

CHUNKS = 5
DROP_AFTER = 2
_SLOW = re.compile(r"\[slow=([0-9.]+)\]")
_TAG = re.compile(r"\[t=([\w-]+)\]")


def answer_for(question: str) -> str:
    """The complete answer to a question: a client compares what it got with this."""
    return f"echo: {question} -- the complete answer ends here."


def pieces(text: str, n: int = CHUNKS) -> list[str]:
    step = -(-len(text) // n)
    return [text[i : i + step] for i in range(0, len(text), step)]


def words(text: str) -> int:
    return len(text.split())


def last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


class Upstream:
    def __init__(self) -> None:
        self.mode = "ok"
        self.share = 1.0
        self.hang_s = 30.0
        self.counts: Counter[str] = Counter()
        self.inflight: Counter[str] = Counter()
        self.max_inflight: Counter[str] = Counter()

    async def control(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.mode = str(data.get("mode", "ok"))
        self.share = float(data.get("share", 1.0))
        self.hang_s = float(data.get("hang_s", self.hang_s))
        if data.get("reset"):
            self.counts.clear()
            self.max_inflight.clear()
        return web.json_response({"mode": self.mode, "share": self.share})

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"counts": dict(self.counts), "max_inflight": dict(self.max_inflight)}
        )

    def _fault(self) -> str:
        if self.mode != "ok" and random.random() < self.share:
            return self.mode
        return "ok"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        question = last_user(body)
        tag = m.group(1) if (m := _TAG.search(question)) else ""
        self.inflight[tag] += 1
        self.max_inflight[tag] = max(self.max_inflight[tag], self.inflight[tag])
        try:
            if m := _SLOW.search(question):
                await asyncio.sleep(float(m.group(1)))
            fault = self._fault()
            self.counts[fault] += 1
            if fault == "5xx":
                err = {"message": "injected failure", "type": "server_error", "param": None}
                return web.json_response({"error": err | {"code": None}}, status=500)
            if fault == "hang":
                await asyncio.sleep(self.hang_s)
            text = answer_for(question)
            prompt_tokens = sum(words(str(x.get("content", ""))) for x in body["messages"])
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": words(text)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if body.get("stream"):
                return await self._stream(request, body, text, usage, fault == "drop")
            return await self._complete(request, body, text, usage, fault == "drop")
        finally:
            self.inflight[tag] -= 1

    async def _complete(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str,
        usage: dict[str, int],
        drop: bool,
    ) -> web.StreamResponse:
        payload = json.dumps(
            {
                "id": "chatcmpl-faulty",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "mock-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        ).encode()
        if not drop:
            return web.Response(body=payload, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[: len(payload) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        text: str,
        usage: dict[str, int],
        drop: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(choices: list[Any], use: dict[str, int] | None = None) -> bytes:
            chunk = {
                "id": "chatcmpl-faulty",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "mock-model"),
                "choices": choices,
            }
            if use is not None:
                chunk["usage"] = use
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        for i, part in enumerate(pieces(text)):
            if drop and i == DROP_AFTER:
                assert request.transport is not None
                request.transport.close()
                return resp
            delta = {"content": part} | ({"role": "assistant"} if i == 0 else {})
            await resp.write(event([{"index": 0, "delta": delta, "finish_reason": None}]))
        await resp.write(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(event([], usage))
        await resp.write(b"data: [DONE]\n\n")
        return resp


def make_app() -> web.Application:
    up = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", up.chat)
    app.router.add_post("/control", up.control)
    app.router.add_get("/stats", up.stats)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
