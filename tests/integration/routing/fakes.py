"""Fake models whose quality per prompt is known in advance, as real HTTP servers on 127.0.0.1
speaking OpenAI's Chat Completions wire format, whole answers and streams (what the gateway's
openai_compatible provider calls): a small model that answers a known set of prompts wrongly,
and a judge that grades the shadow stage's rubric by a rule."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection
from typing import Any

from tests.fake_upstream import usage
from tests.servers import ServerThread, read_body

Answerer = Callable[[dict[str, Any]], str]
WRONG = "I am not sure; probably 42."


class RuleModel:
    """A chat model whose answer is ``answer(body)``; every request body is kept."""

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self._server = ServerThread(self._app, lifespan="off")

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def __enter__(self) -> RuleModel:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.loads(await read_body(receive))
        self.received.append(body)
        text = self.answer(body)
        if body.get("stream"):
            await self._stream(body, text, send)
            return
        answer = {
            "id": "chatcmpl-rule",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(body, text),
        }
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    async def _stream(self, body: dict[str, Any], text: str, send: Any) -> None:
        """The answer as OpenAI streams it: a content chunk, the finish, the usage chunk when
        asked for, ``[DONE]``."""
        base = {"id": "chatcmpl-rule", "object": "chat.completion.chunk", "model": body["model"]}
        delta = {"role": "assistant", "content": text}
        events = [
            base | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(base | {"choices": [], "usage": usage(body, text)})
        sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": sse + b"data: [DONE]\n\n"})


def last_user(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


def small_model(wrong_on: Collection[str]) -> RuleModel:
    """Right on every prompt but those of ``wrong_on``, which it answers wrongly."""
    return RuleModel(lambda body: WRONG if last_user(body) in wrong_on else "A fine answer.")


def large_model() -> RuleModel:
    return RuleModel(lambda body: "A fine, thorough answer.")


_ANSWERS = re.compile(r"--- Answer A ---\n(.*?)\n\n--- Answer B ---\n(.*?)\n$", re.DOTALL)


def judge_model() -> RuleModel:
    """Grades by rule, whichever position an answer is in: 1 for the known wrong answer, else 9."""

    def grade(body: dict[str, Any]) -> str:
        found = _ANSWERS.search(last_user(body))
        assert found is not None, "the judge's request lost its shape"
        a, b = (1 if answer == WRONG else 9 for answer in found.groups())
        return f"A: {a}\nB: {b}"

    return RuleModel(grade)
