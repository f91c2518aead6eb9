"""Anthropic's Messages API (``provider: anthropic``), and the base of Claude on Vertex.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``;
``base_url`` defaults to https://api.anthropic.com. The chat body goes out as a Messages body
and the answer comes back as chat (`gateway.wire.anthropic_upstream`): a whole Message as a
``chat.completion``, a stream's events as ``chat.completion.chunk`` payloads, ending with the
usage chunk at ``message_stop``.

Failures leave as `AttemptFailed`, the way `openai_compatible` maps them (its status mapping is
reused, since Anthropic's error body has the same ``error.message``): 529 ``overloaded_error``
and 429 ``rate_limit_error`` (with its ``retry-after``) are retried and fallen back from like
any transient error; an ``error`` event after the stream began ends it with the status of its
error type; a request Messages cannot take is the client's 400. Timeouts are those of
`openai_compatible`: ``first_token_s`` as the read timeout of a stream, ``total_s`` for the
attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec

from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed, Embedded, Reply, unsupported
from gateway.providers.http import arrived, attempt, drain, raise_for_status, trace_headers
from gateway.providers.sse import DataLines
from gateway.wire.anthropic_upstream import (
    ERROR_STATUS,
    ChunkTranslator,
    Unsupported,
    UpstreamError,
    completion,
    messages_body,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class Anthropic:
    """One pooled session per policy model. Subclasses (Claude on Vertex) change where the
    request goes (`_url`), how it is authenticated (`_auth`) and the body's envelope
    (`_envelope`); the translation and the error mapping stay here."""

    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        self._base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        t = config.timeouts
        # As in openai_compatible: on a stream, sock_read bounds the head and each pause.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect_s, sock_read=t.first_token_s
        )
        self._complete_timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s)
        self._session = aiohttp.ClientSession(
            headers={"content-type": "application/json", **self._static_headers()},
            timeout=self._stream_timeout,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
        )

    def _static_headers(self) -> dict[str, str]:
        """The headers every request carries: the key and the API version, then the policy's."""
        return {
            "x-api-key": self._config.api_key or "",
            "anthropic-version": API_VERSION,
            **self._config.headers,
        }

    def _url(self, stream: bool) -> str:
        return f"{self._base_url}/v1/messages"

    def _envelope(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Messages body as this endpoint wants it: with the policy's model name."""
        return {"model": self._config.model, **body}

    async def _auth(self) -> Mapping[str, str]:
        """Per-request credentials (the key is a static header here)."""
        return {}

    async def _request(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The post's arguments; a body Messages cannot take fails as the client's 400."""
        try:
            translated = messages_body(body)
        except Unsupported as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            raise AttemptFailed(
                "status", f"HTTP 400: {exc}", status=400, body={"error": error}
            ) from exc
        if stream:
            translated["stream"] = True
        else:
            translated.pop("stream", None)
        headers = {**(trace_headers() or {}), **(await self._auth())}
        return {"data": msgspec.json.encode(self._envelope(translated)), "headers": headers}

    async def complete(self, body: dict[str, Any]) -> Reply:
        request = await self._request(body, stream=False)
        with attempt("the answer"):
            async with asyncio.timeout(self._config.timeouts.total_s):
                async with self._session.post(
                    self._url(False), timeout=self._complete_timeout, **request
                ) as response:
                    await raise_for_status(response)
                    raw = await response.read()

        try:
            return Reply(msgspec.json.encode(completion(msgspec.json.decode(raw))))
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
            raise AttemptFailed("protocol", f"unreadable Message: {exc!r}") from exc

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        request = await self._request(body, stream=True)
        deadline = time.monotonic() + self._config.timeouts.total_s
        with attempt("data"):
            async with self._session.post(self._url(True), **request) as response:
                await raise_for_status(response)
                lines, events = DataLines(), ChunkTranslator()
                while data := await arrived(response, deadline):
                    if batch := _translated(events, lines.feed(data)):
                        yield batch
                    if events.done:
                        await drain(response)
                        return
        raise AttemptFailed("protocol", "the stream ended before message_stop")

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    async def aclose(self) -> None:
        await self._session.close()


def _translated(events: ChunkTranslator, payloads: list[bytes]) -> list[bytes]:
    """The chunk payloads for the events that arrived; an ``error`` event or an unreadable one
    fails the attempt (an error event with the status of its type: 529, 429... are retried)."""
    try:
        return [
            msgspec.json.encode(chunk)
            for payload in payloads
            for chunk in events.feed(msgspec.json.decode(payload))
        ]
    except UpstreamError as exc:
        status = ERROR_STATUS.get(exc.kind, 500)
        error = {"message": exc.message, "type": exc.kind}
        raise AttemptFailed(
            "status", f"HTTP {status}: {exc}", status=status, body={"error": error}
        ) from exc
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
        raise AttemptFailed("protocol", f"unreadable stream event: {exc!r}") from exc
