"""OTLP/HTTP bodies POSTed to one collector URL: headers, compression, TLS, bounded retries.

A POST that gets 429, 502, 503 or 504, or fails in transport, is retried with exponential
backoff and jitter (tenacity; a ``Retry-After`` in seconds is honoured up to
``max_backoff_s``) a bounded number of times, as the OTLP specification asks; `OtlpPoster.post`
then says what went wrong, and the caller decides what that costs (`otlp_traces` counts the
batch's spans as lost).

Why http.client rather than httpx: this runs on an export thread that shares the GIL with the
event loop, and one POST through http.client costs a fraction of httpx's Python work; the one
kept-alive connection needs no pool, and httpx would log every export at INFO.
"""

from __future__ import annotations

import gzip
import http.client
import ssl
import zlib
from typing import NamedTuple
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from gateway.telemetry.config import SpanExportSettings

RETRYABLE = frozenset({429, 502, 503, 504})


class OtlpPoster:
    """POSTs bodies of one content type to ``url``; not thread-safe (one export thread)."""

    def __init__(self, url: str, settings: SpanExportSettings, content_type: str) -> None:
        self.url = url
        self._compression = settings.compression
        self._headers = {**settings.headers, "content-type": content_type}
        if settings.compression in ("gzip", "deflate"):
            self._headers["content-encoding"] = settings.compression
        self._connection = _Connection(url, settings)
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.max_attempts)
            | stop_after_delay(settings.max_backoff_s * 4),
            wait=_Backoff(settings),
            retry=retry_if_result(lambda r: r.status in RETRYABLE)
            | retry_if_exception_type((OSError, http.client.HTTPException)),
            # Out of attempts: the last reply (reported below), or the last error raised again.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )

    def post(self, body: bytes) -> str | None:
        """Send ``body`` (retrying as the module says): None once the collector took it, else
        what went wrong, for a log line. Never raises."""
        if self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
        elif self._compression == "deflate":
            body = zlib.compress(body, 6)
        try:
            reply = self._retrying(self._connection.post, body, self._headers)
        except Exception as exc:  # the export thread must live on, whatever the failure
            return repr(exc)
        if 200 <= reply.status < 300:
            return None
        return f"HTTP {reply.status} {reply.body[:200]!r}"

    def close(self) -> None:
        self._connection.close()


class _Backoff(wait_base):
    """Exponential backoff with jitter, or the reply's ``Retry-After`` seconds when longer."""

    def __init__(self, settings: SpanExportSettings) -> None:
        self._max = settings.max_backoff_s
        self._backoff = wait_exponential(multiplier=settings.backoff_s, max=self._max)
        self._jitter = wait_random(0, settings.backoff_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = min(self._backoff(retry_state) + self._jitter(retry_state), self._max)
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            after = outcome.result().retry_after
            if after.isdigit():
                return min(max(backoff, float(after)), self._max)
        return backoff


class _Reply(NamedTuple):
    status: int
    retry_after: str
    body: bytes


class _Connection:
    """One kept-alive HTTP(S) connection to the collector, opened again after any failure."""

    def __init__(self, url: str, settings: SpanExportSettings) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = settings.timeout_s
        self._tls = _tls(settings) if self._https else None
        self._open: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> _Reply:
        connection = self._open or self._connect()
        try:
            connection.request("POST", self._path, body, headers)
            response = connection.getresponse()
            after = response.getheader("retry-after") or ""
            reply = _Reply(response.status, after, response.read())
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return reply

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            self._open = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls
            )
        else:
            self._open = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._open

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


def _tls(settings: SpanExportSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.certificate)
    if settings.client_certificate is not None:
        context.load_cert_chain(settings.client_certificate, settings.client_key)
    return context
