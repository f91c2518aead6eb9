"""Providers: the one seam between the gateway and a model's API.

Every provider offers the same calls (`Provider`); whatever goes wrong below it (httpx
errors, HTTP statuses, garbled bodies) leaves it as one `AttemptFailed`, so the call stage can
decide between retry, fallback and giving up without knowing any transport. A provider that
cannot answer a kind of request (a chat engine asked for embeddings, an embedder asked to chat)
fails it as the client's mistake (`unsupported`); routing never sends it one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

FailureKind = Literal["connect", "timeout", "status", "protocol"]
_NOT_THE_CLIENTS_FAULT = frozenset({401, 403, 404, 408, 409, 429})


class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int = 0
    """Prompt tokens the provider read from its prompt cache."""
    cache_write_tokens: int = 0
    """Prompt tokens the provider wrote to its prompt cache (Anthropic's and Bedrock's cache
    writes, priced apart); OpenAI reports none."""


class Usage(msgspec.Struct, frozen=True):
    """Token counts as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else 0

    @property
    def cache_write_tokens(self) -> int:
        return self.prompt_tokens_details.cache_write_tokens if self.prompt_tokens_details else 0


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete, successful non-streamed answer: the upstream's bytes, passed on untouched."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Embedded:
    """A successful embeddings answer, read: one row per input, in the inputs' order."""

    vectors: npt.NDArray[np.float32]
    model: str
    """The ``model`` the provider put in its response."""
    prompt_tokens: int | None
    """The provider's count for all the inputs; None when it sent no usage."""
    tokens: tuple[int, ...] | None = None
    """Each input's tokens, when the provider knows them (the bundled embedder does)."""


class AttemptFailed(Exception):
    """One attempt on one provider failed, and why, in terms the call stage can act on."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        """Worth another try on the same provider: transient by nature."""
        if self.kind in ("connect", "timeout"):
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)

    @property
    def clients_fault(self) -> bool:
        """The request itself is wrong (400, 413, 422...): no retry or fallback can help."""
        return (
            self.kind == "status"
            and self.status is not None
            and 400 <= self.status < 500
            and self.status not in _NOT_THE_CLIENTS_FAULT
        )


class Provider(Protocol):
    async def complete(self, body: dict[str, Any]) -> Reply:
        """One non-streamed attempt; raises `AttemptFailed`."""

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        """One streamed attempt: yields the SSE ``data`` payloads, stops before ``[DONE]``.

        Each batch holds the payloads that arrived together (never none), so that those that
        are already here pass through the gateway, and to the client, in one go.

        Raises `AttemptFailed` from the first ``__anext__`` when the attempt fails before its
        first chunk, and from a later one when the stream breaks.
        """

    async def embed(self, body: dict[str, Any]) -> Embedded:
        """One embeddings attempt for an Embeddings body whose ``input`` is a list; raises
        `AttemptFailed`."""

    async def aclose(self) -> None:
        """Close the connection pool."""


def unsupported(what: str) -> AttemptFailed:
    """The failure of a call this provider does not answer (``what``: chat, embeddings)."""
    return AttemptFailed("status", f"HTTP 400: this model does not answer {what}", status=400)
