"""The OpenAI Chat Completions wire protocol, spoken by most model servers.

One pooled ``httpx.AsyncClient`` per model entry of the policy, created when the policy is
loaded and reused by every request; per-request client creation would cost a TLS handshake
and a pool each time.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import msgspec

from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed, Reply, usage_of


class OpenAICompatible:
    def __init__(self, config: ModelConfig) -> None:
        self._config = config
        t = config.timeouts
        headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            # read is the wait for the response head and between streamed chunks: the TTFT limit.
            timeout=httpx.Timeout(
                connect=t.connect_s, read=t.first_token_s, write=t.first_token_s, pool=t.connect_s
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
        )

    def _payload(self, body: dict[str, Any]) -> bytes:
        return msgspec.json.encode({**body, "model": self._config.model})

    async def complete(self, body: dict[str, Any]) -> Reply:
        deadline = time.monotonic() + self._config.timeouts.total_s
        try:
            async with self._client.stream(
                "POST", "/chat/completions", content=self._payload(body)
            ) as response:
                await _raise_for_status(response)
                content = await _read_until(response, deadline)
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc
        return Reply(content, usage_of(content))

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        deadline = time.monotonic() + self._config.timeouts.total_s
        try:
            async with self._client.stream(
                "POST", "/chat/completions", content=self._payload(body)
            ) as response:
                await _raise_for_status(response)
                async for line in response.aiter_lines():
                    if time.monotonic() > deadline:
                        raise AttemptFailed("timeout", "the stream ran past its total timeout")
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names and blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield data.encode()
        except httpx.HTTPError as exc:
            raise _translate(exc) from exc
        raise AttemptFailed("protocol", "the stream ended without data: [DONE]")

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_until(response: httpx.Response, deadline: float) -> bytes:
    chunks = []
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise AttemptFailed("timeout", "the response ran past its total timeout")
    return b"".join(chunks)


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    raw = await response.aread()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        body = None
    message = _error_message(body) or raw[:200].decode(errors="replace") or response.reason_phrase
    raise AttemptFailed(
        "status",
        f"HTTP {response.status_code}: {message}",
        status=response.status_code,
        body=body,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def _error_message(body: dict[str, Any] | None) -> str | None:
    error = body.get("error") if body else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _translate(exc: httpx.HTTPError) -> AttemptFailed:
    if isinstance(exc, httpx.TimeoutException):
        what = (
            "connecting"
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            else "waiting for data"
        )
        return AttemptFailed("timeout", f"timed out {what}")
    if isinstance(exc, httpx.ConnectError):
        return AttemptFailed("connect", f"cannot connect: {exc}")
    return AttemptFailed("protocol", f"{type(exc).__name__}: {exc}")
