"""How the Azure providers authorize their requests: a fixed key, or Microsoft Entra ID tokens.

With ``azure.auth: api_key`` the key is a fixed header of the provider's session. With
``entra_id`` a bearer token comes from azure-identity's ``DefaultAzureCredential`` (environment
service principal, workload identity, managed identity, Azure CLI... in its documented order),
for one scope per provider (``https://cognitiveservices.azure.com/.default`` for Azure OpenAI,
``https://ml.azure.com/.default`` for Azure ML):

- kept and reused until `REFRESH_MARGIN_S` before it expires (or its ``refresh_on``), then
  fetched again before the request that finds it stale;
- fetched off the event loop: the synchronous credential runs in a worker thread, since its
  chain may spawn the Azure CLI or wait on a metadata endpoint, and a thread does not tie it
  to one event loop's aiohttp session as ``azure.identity.aio`` would;
- one fetch at a time: requests that find the token stale together wait for one fetch (the
  lock), and a request that waited takes the token fetched meanwhile instead of fetching again;
- a 401 from the service makes one forced fetch and one retry of that attempt (a second 401
  leaves as the attempt's failure, so the call stage moves on to a fallback). The credential
  keeps a cache of its own (MSAL's), so a token it still considers valid may come back: the
  retry is then bounded to one, never a loop.

The token is set as the session's default ``authorization`` header before each attempt: the
header a request carries is read when it is sent, so every request goes with the newest token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Protocol, TypeVar

from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import AzureError, ClientAuthenticationError

from gateway.providers import AttemptFailed

T = TypeVar("T")
REFRESH_MARGIN_S = 300.0
"""A token this close to its expiry is replaced before use: a request may take minutes, and
clocks differ."""
Batches = AsyncGenerator[list[bytes], None]


class TokenSource(Protocol):
    """What a credential offers (azure-core's ``SupportsTokenInfo``): its tokens, closing."""

    def get_token_info(self, *scopes: str) -> AccessTokenInfo: ...

    def close(self) -> None: ...


def default_credential() -> TokenSource:
    """azure-identity's default chain (imported when first needed: it is slow to import)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class EntraToken:
    """One scope's bearer token, cached, refreshed before it expires, one fetch at a time."""

    def __init__(
        self,
        scope: str,
        credential: Callable[[], TokenSource] = default_credential,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scope = scope
        self._make_credential = credential
        self._credential: TokenSource | None = None
        self._clock = clock
        self._token: AccessTokenInfo | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Tokens fetched so far (for tests and logs)."""

    async def current(self) -> AccessTokenInfo:
        """A token good for at least `REFRESH_MARGIN_S` (fetched when the one held is not)."""
        token = self._token
        if token is not None and not self._stale(token):
            return token
        return await self._replace(token)

    async def refresh(self, rejected: AccessTokenInfo) -> AccessTokenInfo:
        """A token other than ``rejected`` if anyone fetched one meanwhile, else a new fetch."""
        return await self._replace(rejected)

    def _stale(self, token: AccessTokenInfo) -> bool:
        now = self._clock()
        return now >= token.expires_on - REFRESH_MARGIN_S or (
            token.refresh_on is not None and now >= token.refresh_on
        )

    async def _replace(self, stale: AccessTokenInfo | None) -> AccessTokenInfo:
        async with self._lock:
            if self._token is not None and self._token is not stale:
                return self._token  # fetched while this request waited for the lock
            self._token = await asyncio.to_thread(self._fetch)
            self.fetches += 1
            return self._token

    def _fetch(self) -> AccessTokenInfo:
        """In a worker thread: the credential's token (the credential made at the first)."""
        try:
            if self._credential is None:
                self._credential = self._make_credential()
            return self._credential.get_token_info(self._scope)
        except ClientAuthenticationError as exc:
            raise AttemptFailed(
                "status", f"no Microsoft Entra ID token for {self._scope}: {exc}", status=401
            ) from exc
        except AzureError as exc:
            raise AttemptFailed("connect", f"cannot reach the token endpoint: {exc}") from exc

    async def aclose(self) -> None:
        if self._credential is not None:
            await asyncio.to_thread(self._credential.close)


class AzureAuth:
    """Runs a provider's attempts with its Entra token set, retrying once after a 401; with a
    key (``token`` None) the attempts run as they are, the key being a fixed session header."""

    def __init__(self, headers: MutableMapping[str, str], token: EntraToken | None) -> None:
        self._headers = headers
        """The session's default headers, where the token goes."""
        self._token = token

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, authorized; after a 401, once more with a refreshed token."""
        if self._token is None:
            return await attempt()
        used = await self._authorize(None)
        try:
            return await attempt()
        except AttemptFailed as exc:
            if exc.status != 401:
                raise
        await self._authorize(used)
        return await attempt()

    async def stream(self, attempt: Callable[[], Batches]) -> Batches:
        """``attempt()``'s batches, authorized; a 401 (it comes before the first batch) opens
        the stream once more with a refreshed token."""
        used = await self._authorize(None)
        batches = attempt()
        try:
            first = await anext(batches, None)
        except AttemptFailed as exc:
            await batches.aclose()
            if self._token is None or exc.status != 401:
                raise
            await self._authorize(used)
            batches, first = attempt(), None
        async with contextlib.aclosing(batches):
            if first is not None:
                yield first
            async for batch in batches:
                yield batch

    async def _authorize(self, rejected: AccessTokenInfo | None) -> AccessTokenInfo | None:
        """Set the token to send (a refreshed one after ``rejected``); None with a key."""
        if self._token is None:
            return None
        if rejected is None:
            token = await self._token.current()
        else:
            token = await self._token.refresh(rejected)
        self._headers["authorization"] = f"Bearer {token.token}"
        return token

    async def aclose(self) -> None:
        if self._token is not None:
            await self._token.aclose()
