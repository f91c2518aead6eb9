"""One chat request through the gateway, judged: a complete answer, a clean OpenAI-shaped error,
a stream the client left on purpose, or a failure (a hang past the client's timeout, a cut
connection without an error event, a partial or wrong answer, an error body of another shape).

Answers are checked against `faulty_upstream.answer_for`, so a partial answer cannot pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import stack
from faulty_upstream import answer_for


@dataclass
class Outcome:
    i: int
    phase: str
    prompt: str
    stream: bool
    abandon: bool
    kind: str = "FAIL"  # ok | error | abandoned | FAIL
    status: int | None = None
    code: str | None = None
    request_id: str | None = None
    cache: str | None = None
    replica: str | None = None
    score: str | None = None
    expect: str | None = None
    """The answer that counts as complete; by default the upstream's to ``prompt`` (a
    semantic hit answers with the cached question's)."""
    latency_s: float = 0.0
    detail: str = ""


def body(prompt: str, stream: bool, model: str = "mock", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
    } | extra
    if stream:
        out |= {"stream": True, "stream_options": {"include_usage": True}}
    return out


def _clean_error(data: Any) -> str | None:
    """The error's code (or type) when ``data`` has OpenAI's error shape, else None."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    err = data["error"]
    if not isinstance(err.get("message"), str) or not isinstance(err.get("type"), str):
        return None
    return str(err.get("code") or err["type"])


async def chat(
    session: aiohttp.ClientSession,
    url: str,
    out: Outcome,
    run_tag: str,
    timeout_s: float = 20.0,
    key: str = stack.TENANT_KEY,
    headers: dict[str, str] | None = None,
    model: str = "mock",
    **extra: Any,
) -> Outcome:
    """Send ``out``'s request to ``url`` (a gateway's root) and fill in ``out``."""
    hdrs = {"Authorization": f"Bearer {key}", "x-gateway-tags": run_tag} | (headers or {})
    expected = out.expect or answer_for(out.prompt)
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(
                url + "/v1/chat/completions",
                json=body(out.prompt, out.stream, model, **extra),
                headers=hdrs,
            ) as r:
                out.status = r.status
                out.request_id = r.headers.get("x-gateway-request-id")
                out.cache = r.headers.get("x-gateway-cache")
                out.replica = r.headers.get("x-replica")
                out.score = r.headers.get("x-gateway-cache-score")
                if r.status != 200:
                    raw = await r.read()
                    try:
                        out.code = _clean_error(json.loads(raw))
                    except ValueError:
                        out.code = None
                    out.kind = "error" if out.code else "FAIL"
                    out.detail = "" if out.code else f"error body not OpenAI's: {raw[:120]!r}"
                elif not out.stream:
                    data = await r.json()
                    text = data["choices"][0]["message"]["content"]
                    out.kind = "ok" if text == expected else "FAIL"
                    out.detail = "" if text == expected else f"partial answer {text!r}"
                else:
                    await _read_stream(r, out, expected)
    except TimeoutError:
        out.kind, out.detail = "FAIL", f"client timeout ({timeout_s:g} s): a hang"
    except (aiohttp.ClientError, ValueError, KeyError, IndexError) as exc:
        out.kind, out.detail = "FAIL", f"{type(exc).__name__}: {exc}"
    out.latency_s = time.monotonic() - t0
    return out


async def _read_stream(r: aiohttp.ClientResponse, out: Outcome, expected: str) -> None:
    text, done, usage, error = "", False, None, None
    async for raw in r.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        data = json.loads(payload)
        if (code := _clean_error(data)) is not None:
            error = code
            continue
        for ch in data.get("choices") or []:
            text += (ch.get("delta") or {}).get("content") or ""
        usage = data.get("usage") or usage
        if out.abandon and text:
            r.close()  # the client leaves mid-stream
            out.kind, out.detail = "abandoned", f"left after {len(text)} chars"
            return
    if error is not None:
        out.kind, out.code = "error", error  # an error event, then a clean close
    elif done and text == expected and usage:
        out.kind = "ok"
    else:
        out.kind = "FAIL"
        out.detail = f"stream ended: done={done} usage={bool(usage)} text={text!r}"
