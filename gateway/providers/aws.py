"""What the AWS providers (``bedrock``, ``sagemaker``) share: SigV4 signing, credentials, the
binary event stream, and AWS errors translated into `AttemptFailed`.

Signing is botocore's own (``SigV4Auth`` over an ``AWSRequest``), done last, over the exact
bytes sent, with the fewest signed headers (host, content-type, x-amz-date, the session token
and the ones a provider must add): a header a hop may rewrite (user agent, trace context) is
left out of the signature (PITFALLS 3.5). The URL goes to aiohttp already encoded, so that a
model id or ARN with ``:`` and ``/`` reaches AWS exactly as it was signed (PITFALLS 3.4).

Credentials come from the policy's ``aws`` keys, else from botocore's chain (environment,
shared files and ``profile``, container or instance role), looked up once off the event loop;
refreshable ones (a role's) are refreshed off the event loop too.

Responses are read by their status first: a non-200 body is JSON (AWS's ``message`` and error
type), never an event stream (PITFALLS 3.4); an event stream is decoded by botocore's
``EventStreamBuffer`` (prelude and message CRCs checked), and an exception frame in it becomes
an `AttemptFailed` classified like the HTTP error of the same type (PITFALLS 3.6).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec
import yarl
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError
from botocore.exceptions import BotoCoreError
from botocore.session import Session

from gateway.policy.models import AwsOptions, ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.http import arrived, attempt, retry_after, trace_headers

_STATUS_OF_TYPE = {
    "throttlingexception": 429,
    "throttling": 429,
    "toomanyrequestsexception": 429,
    "servicequotaexceededexception": 429,
    "modelnotreadyexception": 503,
    "serviceunavailableexception": 503,
    "serviceunavailable": 503,
    "internalserverexception": 500,
    "internalfailure": 500,
    "internalstreamfailure": 500,
    "modelstreamerrorexception": 502,
    "modelstreamerror": 502,
    "modeltimeoutexception": 504,
    "validationexception": 400,
    "accessdeniedexception": 403,
    "accessdenied": 403,
    "unrecognizedclientexception": 403,
    "resourcenotfoundexception": 404,
}
"""The status an AWS error type stands for, whatever status (or stream frame) carried it:
throttling is a 429 (retried), a model not ready or a service away a 503 (retried, then the
fallbacks), validation the client's fault (400), access denied a 403 (a fallback may help)."""


def error_status(error_type: str | None, status: int) -> int:
    """The status to classify an AWS error by: its type's when known, else the HTTP one.

    ``error_type`` as AWS writes it: ``ThrottlingException``, ``ValidationException:http://...``
    (the ``x-amzn-ErrorType`` header), ``com.amazon.coral#AccessDeniedException`` (``__type``).
    """
    if not error_type:
        return status
    name = error_type.split(":", 1)[0].rsplit("#", 1)[-1].lower()
    return _STATUS_OF_TYPE.get(name, status)


def aws_failure(error_type: str | None, message: str, status: int) -> AttemptFailed:
    """An AWS error as an `AttemptFailed` with an OpenAI-shaped body (passed on to the client
    when it is the client's fault)."""
    status = error_status(error_type, status)
    code = error_type.split(":", 1)[0].rsplit("#", 1)[-1] if error_type else None
    kind = "invalid_request_error" if 400 <= status < 500 else "api_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    label = f"{code}: {message}" if code else message
    return AttemptFailed("status", f"HTTP {status}: {label}", status=status, body=body)


class Signer:
    """Signs requests to one AWS service in one region with SigV4."""

    def __init__(self, aws: AwsOptions, service: str) -> None:
        self._aws = aws
        self._service = service
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()

    async def _current(self) -> ReadOnlyCredentials:
        """The credentials to sign with now; the chain is searched once, off the event loop."""
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._find)
        found = self._credentials
        assert found is not None
        if isinstance(found, RefreshableCredentials) and found.refresh_needed():
            return await asyncio.to_thread(found.get_frozen_credentials)
        return found.get_frozen_credentials()

    def _find(self) -> Credentials:
        aws = self._aws
        if aws.access_key_id and aws.secret_access_key:
            return Credentials(aws.access_key_id, aws.secret_access_key, aws.session_token)
        found = Session(profile=aws.profile).get_credentials()
        if found is None:
            raise AttemptFailed("status", "HTTP 401: no AWS credentials found", status=401)
        return found

    async def sign(
        self, url: str, body: bytes, headers: Mapping[str, str], method: str = "POST"
    ) -> dict[str, str]:
        """The headers to send ``body`` to ``url`` with: ``headers`` plus the signature's.

        ``url`` is already percent-encoded; botocore encodes its path once more for the
        canonical request, as AWS does on its side. S3 (batch inference's files) signs the
        payload's hash too, as its own header.
        """
        try:
            frozen = await self._current()
        except BotoCoreError as exc:  # an unknown profile, a role that cannot be assumed...
            raise AttemptFailed("status", f"HTTP 401: AWS credentials: {exc}", status=401) from exc
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        auth = S3SigV4Auth if self._service == "s3" else SigV4Auth
        auth(frozen, self._service, self._aws.region).add_auth(request)
        return dict(request.headers.items())


class AwsTransport:
    """One pooled aiohttp session to one AWS endpoint, its signer and its timeouts."""

    def __init__(self, config: ModelConfig, service: str, default_host: str) -> None:
        assert config.aws is not None  # the policy's validation guarantees it
        self.config = config
        self.base_url = (config.base_url or f"https://{default_host}").rstrip("/")
        self._signer = Signer(config.aws, service)
        t = config.timeouts
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect_s, sock_read=t.first_token_s
        )
        self._complete_timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s)
        self._session = aiohttp.ClientSession(
            timeout=self._stream_timeout,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
        )

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """A whole answer's bytes from ``POST base_url + path`` (``path`` already encoded);
        ``total_s`` bounds it."""
        with attempt("the answer"):
            async with asyncio.timeout(self.config.timeouts.total_s):
                async with await self._send(path, body, headers, self._complete_timeout) as r:
                    await raise_for_status(r)
                    return await r.read()

    async def events(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncGenerator[list[EventStreamMessage], None]:
        """The event-stream messages of ``POST base_url + path``, in the batches that arrived
        together; an exception frame raises `AttemptFailed` after the events before it."""
        deadline = time.monotonic() + self.config.timeouts.total_s
        try:
            with attempt("data"):
                async with await self._send(path, body, headers, self._stream_timeout) as r:
                    await raise_for_status(r)
                    frames = EventStreamBuffer()
                    while data := await arrived(r, deadline):
                        frames.add_data(data)
                        batch, failure = _events(frames)
                        if batch:
                            yield batch
                        if failure is not None:
                            raise failure
        except ParserError as exc:
            raise AttemptFailed("protocol", f"unreadable event stream: {exc}") from exc

    async def _send(
        self, path: str, body: bytes, headers: Mapping[str, str], limits: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        url = self.base_url + path
        signed = await self._signer.sign(url, body, {"content-type": "application/json", **headers})
        # Trace context is added after signing: it is not part of the signature (a hop may
        # rewrite it) and botocore would leave it out anyway.
        signed.update(trace_headers() or {})
        return await self._session.post(
            yarl.URL(url, encoded=True), data=body, headers=signed, timeout=limits
        )

    async def aclose(self) -> None:
        await self._session.close()


def _events(frames: EventStreamBuffer) -> tuple[list[EventStreamMessage], AttemptFailed | None]:
    """The event messages complete in ``frames``, up to an exception or error frame, and that
    frame as an `AttemptFailed`: the events before it are still passed on."""
    events = []
    for message in frames:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind == "event":
            events.append(message)
            continue
        if kind == "exception":
            error_type = str(headers.get(":exception-type", "exception"))
            text = _message_of(_json(message.payload)) or error_type
        else:
            error_type = str(headers.get(":error-code", "error"))
            text = str(headers.get(":error-message", error_type))
        return events, aws_failure(error_type, f"in the stream: {text}", 502)
    return events, None


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        found = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return found if isinstance(found, dict) else None


def _message_of(body: dict[str, Any] | None) -> str | None:
    """AWS's error text: ``message`` (Bedrock) or ``Message`` (SageMaker)."""
    if body is None:
        return None
    found = body.get("message", body.get("Message"))
    return found if isinstance(found, str) else None


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """An `AttemptFailed` for a non-200 answer, its body read as JSON (never as an event
    stream: a JSON error decoded as frames fails with a checksum mismatch instead)."""
    if response.status == 200:
        return
    raw = await response.read()
    body = _json(raw)
    error_type = response.headers.get("x-amzn-errortype") or (body or {}).get("__type")
    text = _message_of(body) or raw[:200].decode(errors="replace") or response.reason or ""
    status = response.status
    original = (body or {}).get("OriginalStatusCode")
    if isinstance(original, int) and 400 <= original < 600:
        # SageMaker's ModelError (424): the container itself answered this status.
        status, error_type = original, None
    failure = aws_failure(str(error_type) if error_type else None, text, status)
    failure.retry_after = retry_after(response.headers.get("retry-after"))
    raise failure
