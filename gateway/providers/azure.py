"""What the Azure providers share: `OpenAICompatible`'s HTTP exchange, run through Azure's
auth (`azure_auth`), and Azure's stream quirks smoothed out.

Streams (PITFALLS 3.11): Azure's first chunk may carry only ``prompt_filter_results`` with
empty ``choices`` (and empty ``id``, ``model``, ``object``), and a content-filter chunk may come
without ``delta``. Clients index ``choices[0].delta`` (the openai SDK's stream helpers do), so
`without_filter_quirks` drops the first kind (it says nothing to the client; the usage chunk,
which also has empty ``choices``, is kept) and gives the second an empty ``delta``; its
``finish_reason`` (``content_filter`` included) passes on as it is. A chunk that has a
``delta`` is passed on untouched without being decoded, so the common chunk costs one
substring search. (A chunk of several choices of which only some lack ``delta`` passes as it
is: Azure sends filter results for one choice per chunk.)

A subclass says how the session is built (``_session_config``) and where requests go (``_urls``);
this class sets `OpenAICompatible`'s ``_url`` and ``_embeddings_url`` from them, the seams it
reaches (with ``_payload``, which Azure ML's TGI format replaces).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from gateway.policy.models import AzureOptions
from gateway.policy.schema import ModelConfig
from gateway.providers import Embedded, Reply
from gateway.providers.azure_auth import (
    AzureAuth,
    Batches,
    EntraToken,
    TokenSource,
    default_credential,
)
from gateway.providers.openai_compatible import OpenAICompatible


class AzureProvider(OpenAICompatible):
    """An `OpenAICompatible` whose attempts are authorized by key or Entra ID token."""

    scope: ClassVar[str]
    """The Entra ID scope of the service's tokens."""

    def __init__(
        self, config: ModelConfig, credential: Callable[[], TokenSource] = default_credential
    ) -> None:
        """``credential``: where Entra ID tokens come from (tests pass their own)."""
        azure = config.azure or AzureOptions()
        assert config.base_url is not None  # the policy's validation guarantees it
        super().__init__(self._session_config(config, azure))
        self._url, self._embeddings_url = self._urls(config.base_url, config, azure)
        token = EntraToken(self.scope, credential) if azure.auth == "entra_id" else None
        self._auth = AzureAuth(self._session.headers, token)

    @staticmethod
    def _session_config(config: ModelConfig, azure: AzureOptions) -> ModelConfig:
        """``config`` as `OpenAICompatible` is to build the session from: its fixed headers
        (a key), the ``api_key`` it sends as a bearer key, the ``model`` it puts in bodies."""
        raise NotImplementedError

    @staticmethod
    def _urls(base_url: str, config: ModelConfig, azure: AzureOptions) -> tuple[str, str]:
        """The chat completions and the embeddings URLs."""
        raise NotImplementedError

    async def complete(self, body: dict[str, Any]) -> Reply:
        return await self._auth.call(lambda: super(AzureProvider, self).complete(body))

    async def embed(self, body: dict[str, Any]) -> Embedded:
        return await self._auth.call(lambda: super(AzureProvider, self).embed(body))

    def stream(self, body: dict[str, Any]) -> Batches:
        return openai_batches(self._raw_stream(body))

    def _raw_stream(self, body: dict[str, Any]) -> Batches:
        """The upstream's SSE payloads as they come, authorized."""
        return self._auth.stream(lambda: super(AzureProvider, self).stream(body))

    async def aclose(self) -> None:
        await self._auth.aclose()
        await super().aclose()


async def openai_batches(batches: Batches) -> Batches:
    """Azure's stream as OpenAI's (`without_filter_quirks`); closing it closes ``batches``."""
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if cleaned := without_filter_quirks(batch):
                yield cleaned


def without_filter_quirks(batch: list[bytes]) -> list[bytes]:
    """The chunks of ``batch`` as OpenAI would send them: no filter-results-only chunk, and a
    ``delta`` in every choice."""
    out = []
    for payload in batch:
        # A quote inside a JSON string is escaped, so this finds only the key.
        if b'"delta"' in payload:
            out.append(payload)
        elif (fixed := _fixed(payload)) is not None:
            out.append(fixed)
    return out


def _fixed(payload: bytes) -> bytes | None:
    """A chunk without ``delta``: None for a filter-results chunk (no choices, no usage), the
    chunk with empty deltas added to its choices, or the payload as it is (not a chunk)."""
    try:
        chunk = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list):
        return payload  # an error event, say: the gateway's stream reading deals with it
    if not choices:
        return payload if chunk.get("usage") is not None else None
    chunk["choices"] = [{"delta": {}, **c} for c in choices]
    return msgspec.json.encode(chunk)
