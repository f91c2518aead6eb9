"""The OpenAI Chat Completions (and Embeddings) wire protocol, spoken by most model servers.

One pooled ``aiohttp.ClientSession`` per model entry of the policy, created when the policy is
loaded and reused by every request. aiohttp rather than httpx, by measurement: on these 2-core
machines a keep-alive request costs httpx about 1.7 ms of CPU and aiohttp about 0.3 ms
(``bench/overhead/clients.py``), and the client is most of the gateway's own cost per request.

Timeouts: ``first_token_s`` is aiohttp's ``sock_read`` on streams only (the wait for the head,
the first chunk, and between chunks). A non-streamed answer's head comes only when generation
ends, so it is bounded by ``total_s`` alone. Everything aiohttp raises (its ``ClientError``s,
and its HTTP parser's errors) and an SSE line over `sse.MAX_LINE_BYTES` leave as
`AttemptFailed`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import msgspec
import numpy as np

from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed, Embedded, Reply, Usage
from gateway.providers.engine_meter import EngineMeter, Throughput, metrics_url
from gateway.providers.http import arrived, attempt, drain, raise_for_status, trace_headers
from gateway.providers.sse import DataLines


class OpenAICompatible:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        assert config.base_url is not None  # the policy's validation guarantees it
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        t = config.timeouts
        headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        # connect covers the wait for a pooled connection too; on a stream, sock_read is the wait
        # for the response head and between chunks: the time-to-first-token limit.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect_s, sock_read=t.first_token_s
        )
        self._complete_timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s)
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=self._stream_timeout,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
            auto_decompress=True,
        )
        measured = config.price is not None and config.price.throughput == "measured"
        self._meter = EngineMeter(metrics_url(config.base_url), self._session) if measured else None

    def _payload(self, body: dict[str, Any]) -> bytes:
        return msgspec.json.encode({**body, "model": self._config.model})

    async def complete(self, body: dict[str, Any]) -> Reply:
        return Reply(await self._post(self._url, body))

    async def embed(self, body: dict[str, Any]) -> Embedded:
        """``POST {base_url}/embeddings``; the vectors read from floats or base64, as sent."""
        return embedded(await self._post(self._embeddings_url, body), len(body["input"]))

    async def _post(self, url: str, body: dict[str, Any]) -> bytes:
        """A whole answer's bytes (the head comes only when it is done: ``total_s`` bounds it)."""
        with attempt("the answer"):
            async with asyncio.timeout(self._config.timeouts.total_s):
                async with self._session.post(
                    url,
                    data=self._payload(body),
                    headers=trace_headers(),
                    timeout=self._complete_timeout,
                ) as response:
                    await raise_for_status(response)
                    return await response.read()

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        deadline = time.monotonic() + self._config.timeouts.total_s
        with attempt("data"):
            async with self._session.post(
                self._url, data=self._payload(body), headers=trace_headers()
            ) as response:
                await raise_for_status(response)
                lines = DataLines()
                while data := await arrived(response, deadline):
                    if batch := lines.feed(data):
                        yield batch
                    if lines.done:
                        await drain(response)
                        return
        raise AttemptFailed("protocol", "the stream ended without data: [DONE]")

    def throughput(self) -> Throughput:
        """What the engine behind ``base_url`` measured, when the price asks for it (a
        separate ``local-engine serve``); else nothing, and the configured figures stand."""
        return (None, None) if self._meter is None else self._meter.throughput()

    async def aclose(self) -> None:
        if self._meter is not None:
            await self._meter.aclose()
        await self._session.close()


class _Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str


class _Embeddings(msgspec.Struct):
    data: list[_Embedding]
    model: str = ""
    usage: Usage | None = None


def embedded(raw: bytes, count: int) -> Embedded:
    """An OpenAI embeddings object read into float32 rows in input order (``embedding`` a list
    of floats, or base64 of little-endian float32); `AttemptFailed` unless it holds ``count``
    vectors of one size."""
    try:
        answer = msgspec.json.decode(raw, type=_Embeddings)
        rows = sorted(answer.data, key=lambda d: d.index)
        vectors = [
            np.frombuffer(base64.b64decode(r.embedding, validate=True), "<f4")
            if isinstance(r.embedding, str)
            else np.asarray(r.embedding, np.float32)
            for r in rows
        ]
    except (msgspec.MsgspecError, binascii.Error, ValueError) as exc:
        raise AttemptFailed("protocol", f"unreadable embeddings: {exc}") from exc
    if [r.index for r in rows] != list(range(count)) or len({v.size for v in vectors}) != 1:
        raise AttemptFailed("protocol", f"expected {count} embeddings of one size")
    tokens = answer.usage.prompt_tokens if answer.usage is not None else None
    return Embedded(np.vstack(vectors).astype(np.float32), answer.model, tokens)
