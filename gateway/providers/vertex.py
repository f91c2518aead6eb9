"""Vertex AI (``provider: vertex``): Gemini through Vertex's OpenAI-compatible endpoint, and
Claude through Anthropic's publisher endpoints, both with Google OAuth tokens.

Which API a model speaks is read from its name: ``claude-...`` (or ``anthropic/claude-...``,
the explicit form) is Claude on Vertex, ``POST .../v1/projects/{project}/locations/{location}/
publishers/anthropic/models/{model}:rawPredict`` (``:streamRawPredict`` for streams) with the
Messages body less ``model`` plus ``anthropic_version: vertex-2023-10-16`` (the translation and
error mapping of `gateway.providers.anthropic`); anything else (``google/gemini-...``) goes to
``.../v1beta1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions``,
which speaks OpenAI's wire format, so `OpenAICompatible` talks to it as it is, given the token.

The root is ``https://{location}-aiplatform.googleapis.com`` (``https://aiplatform.googleapis
.com`` for ``location: global``); a policy ``base_url`` replaces it (a test's fake server).

Tokens (`GoogleToken`): google-auth's credentials from ``gcp.credentials_file`` (a service
account key) or the application default credentials, refreshed on a worker thread (google-auth
blocks) when less than `REFRESH_MARGIN` of their life is left, and once more when Vertex
answers 401 (a revoked or rotated token), after which the attempt is made again once. Concurrent
refreshes coalesce into one: whoever comes second finds the token already new.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from gateway.policy.models import GcpOptions, ModelConfig
from gateway.providers import AttemptFailed, Embedded, Provider, Reply, unsupported
from gateway.providers.anthropic import Anthropic
from gateway.providers.openai_compatible import OpenAICompatible

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN = dt.timedelta(minutes=5)
"""A token with less life left than this is refreshed before it is sent (they last an hour)."""
ANTHROPIC_VERSION = "vertex-2023-10-16"
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Naive UTC, as google-auth keeps a token's ``expiry``."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class GoogleToken:
    """The bearer token of one policy model's credentials, kept fresh."""

    def __init__(self, gcp: GcpOptions, clock: Clock = utc_now) -> None:
        self._gcp = gcp
        self._clock = clock
        self._credentials: google.auth.credentials.Credentials | None = None
        self._http = requests.Session()
        self._lock = asyncio.Lock()
        self.generation = 0
        """How many times the token was fetched: a caller that saw generation ``g`` and was
        refused asks `refresh` for a token newer than ``g``."""

    async def header(self) -> str:
        """``Bearer <token>``, refreshed first when it expires within `REFRESH_MARGIN`."""
        if self._stale():
            await self.refresh(self.generation)
        assert self._credentials is not None
        return f"Bearer {self._credentials.token}"

    def _stale(self) -> bool:
        credentials = self._credentials
        if credentials is None or credentials.expiry is None or credentials.token is None:
            return True
        expiry: dt.datetime = credentials.expiry
        return expiry - REFRESH_MARGIN <= self._clock()

    async def refresh(self, seen: int) -> None:
        """A token newer than generation ``seen``: fetched unless another caller already did."""
        async with self._lock:
            if self.generation != seen:
                return
            try:
                await asyncio.to_thread(self._fetch)
            except google.auth.exceptions.TransportError as exc:
                raise AttemptFailed(
                    "connect", f"cannot reach Google's token service: {exc}"
                ) from exc
            except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
                message = f"HTTP 401: no Google token for Vertex AI: {exc}"
                raise AttemptFailed("status", message, status=401) from exc
            self.generation += 1

    def _fetch(self) -> None:
        """Load the credentials (once) and get a new token: blocking, on a worker thread."""
        if self._credentials is None:
            self._credentials = self._load()
        request = google.auth.transport.requests.Request(self._http)
        self._credentials.refresh(request)  # type: ignore[no-untyped-call]

    def _load(self) -> google.auth.credentials.Credentials:
        if self._gcp.credentials_file:
            path = self._gcp.credentials_file
            found: google.auth.credentials.Credentials = (
                service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    path, scopes=SCOPES
                )
            )
            return found
        credentials, _ = google.auth.default(scopes=SCOPES)
        return credentials

    def close(self) -> None:
        self._http.close()


def is_claude(model: str) -> bool:
    """Claude on Vertex (``claude-...`` or the explicit ``anthropic/claude-...``)."""
    return model.startswith(("claude-", "anthropic/"))


def root(config: ModelConfig) -> str:
    """The API root: the policy's ``base_url``, else the location's regional host."""
    assert config.gcp is not None  # the policy's validation guarantees it
    if config.base_url:
        return config.base_url.rstrip("/")
    if config.gcp.location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{config.gcp.location}-aiplatform.googleapis.com"


def _location_path(config: ModelConfig) -> str:
    assert config.gcp is not None
    return f"projects/{config.gcp.project}/locations/{config.gcp.location}"


def claude_url(config: ModelConfig, stream: bool) -> str:
    model = quote(config.model.removeprefix("anthropic/"), safe="@")
    verb = "streamRawPredict" if stream else "rawPredict"
    return f"{root(config)}/v1/{_location_path(config)}/publishers/anthropic/models/{model}:{verb}"


def gemini_base_url(config: ModelConfig) -> str:
    """Where `OpenAICompatible` appends ``/chat/completions``."""
    return f"{root(config)}/v1beta1/{_location_path(config)}/endpoints/openapi"


class _Claude(Anthropic):
    """Claude on Vertex: the Messages translation with Vertex's URL, envelope and token."""

    def __init__(self, config: ModelConfig, token: GoogleToken) -> None:
        super().__init__(config)
        self._token = token

    def _static_headers(self) -> dict[str, str]:
        return dict(self._config.headers)

    def _url(self, stream: bool) -> str:
        return claude_url(self._config, stream)

    def _envelope(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"anthropic_version": ANTHROPIC_VERSION, **body}

    async def _auth(self) -> Mapping[str, str]:
        return {"authorization": await self._token.header()}


class _Gemini(OpenAICompatible):
    """The OpenAI-compatible endpoint; the session's ``authorization`` follows the token (its
    default headers are read as each request starts)."""

    def __init__(self, config: ModelConfig, token: GoogleToken) -> None:
        super().__init__(config.model_copy(update={"base_url": gemini_base_url(config)}))
        self._token = token

    async def _authorize(self) -> None:
        self._session.headers["authorization"] = await self._token.header()

    async def complete(self, body: dict[str, Any]) -> Reply:
        await self._authorize()
        return await super().complete(body)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        await self._authorize()
        async for batch in super().stream(body):
            yield batch


class Vertex:
    """A policy model on Vertex AI: Claude or Gemini by its name, one token refresh and one
    more try when Vertex answers 401."""

    def __init__(self, config: ModelConfig, *, clock: Clock = utc_now) -> None:
        assert config.gcp is not None  # the policy's validation guarantees it
        self._token = GoogleToken(config.gcp, clock)
        api = _Claude if is_claude(config.model) else _Gemini
        self._api: Provider = api(config, self._token)

    async def complete(self, body: dict[str, Any]) -> Reply:
        seen = self._token.generation
        try:
            return await self._api.complete(body)
        except AttemptFailed as exc:
            if exc.status != 401:
                raise
        await self._token.refresh(seen)
        return await self._api.complete(body)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        seen = self._token.generation
        batches = self._api.stream(body)
        try:
            try:
                first = await anext(batches)
            except AttemptFailed as exc:
                if exc.status != 401:
                    raise
                await batches.aclose()
                await self._token.refresh(seen)
                batches = self._api.stream(body)
                first = await anext(batches)
            yield first
            async for batch in batches:
                yield batch
        except StopAsyncIteration:
            return
        finally:
            await batches.aclose()

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    async def aclose(self) -> None:
        await self._api.aclose()
        self._token.close()
