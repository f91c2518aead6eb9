"""What the providers that speak HTTP share: how a failed exchange becomes an `AttemptFailed`
(statuses with their error bodies and Retry-After, aiohttp's errors, timeouts), how a streamed
body is read as it arrives, the trace headers an upstream joins the request's trace with, and
the drain that keeps a connection pooled."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import msgspec
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from gateway import telemetry
from gateway.providers import AttemptFailed
from gateway.providers.sse import BATCH_BYTES


def trace_headers() -> Mapping[str, str] | None:
    """``traceparent`` (and ``tracestate``) so the upstream joins the request's trace."""
    return telemetry.upstream_headers() or None


async def drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body), so the connection goes back
    to the pool instead of being closed; a server that keeps it open past a moment loses it."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(0.5):
            await response.read()


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    raw = await response.read()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        body = None
    message = _error_message(body) or raw[:200].decode(errors="replace") or response.reason
    raise AttemptFailed(
        "status",
        f"HTTP {response.status}: {message}",
        status=response.status,
        body=body,
        retry_after=retry_after(response.headers.get("retry-after")),
    )


def _error_message(body: dict[str, Any] | None) -> str | None:
    error = body.get("error") if body else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def retry_after(value: str | None) -> float | None:
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


AIOHTTP_ERRORS = (aiohttp.ClientError, HttpProcessingError)
"""What aiohttp raises on a failed exchange: its client errors, and its HTTP parser's errors
(``LineTooLong``, ``BadHttpMessage``...), which are not ``ClientError``s."""


def translate(exc: aiohttp.ClientError | HttpProcessingError) -> AttemptFailed:
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError):
        return AttemptFailed("timeout", f"timed out: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return AttemptFailed("connect", f"cannot connect: {exc}")
    if isinstance(exc, LineTooLong):
        # Its text quotes the start of the line: upstream data, not a reason.
        return AttemptFailed("protocol", f"the upstream sent a line over {exc.args[1]} bytes")
    return AttemptFailed("protocol", f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def attempt(waiting_for: str) -> Iterator[None]:
    """Around one exchange with a provider: a timeout, or anything aiohttp raises, leaves as
    `AttemptFailed` (``waiting_for`` says what was awaited, for the timeout's reason)."""
    try:
        yield
    except TimeoutError as exc:
        raise AttemptFailed("timeout", f"timed out waiting for {waiting_for}") from exc
    except AIOHTTP_ERRORS as exc:
        raise translate(exc) from exc


async def arrived(response: aiohttp.ClientResponse, deadline: float) -> bytes:
    """What has arrived of a streamed body, all that is there (up to `BATCH_BYTES`), so that the
    chunks that came together are handled together; ``b""`` at its end. Past ``deadline`` (a
    ``time.monotonic()``: the total limit) the attempt fails; the first-token limit, between
    reads, is aiohttp's ``sock_read``."""
    data = await response.content.read(BATCH_BYTES)
    if data and time.monotonic() > deadline:
        raise AttemptFailed("timeout", "the stream ran past its total timeout")
    return data
