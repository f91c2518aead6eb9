"""Providers: the one seam between the gateway and a model's API.

Every provider offers the same three calls (`Provider`); whatever goes wrong below it (httpx
errors, HTTP statuses, garbled bodies) leaves it as one `AttemptFailed`, so the call stage can
decide between retry, fallback and giving up without knowing any transport.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

FailureKind = Literal["connect", "timeout", "status", "protocol"]
_NOT_THE_CLIENTS_FAULT = frozenset({401, 403, 404, 408, 409, 429})


class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int = 0


class Usage(msgspec.Struct, frozen=True):
    """Token counts as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else 0


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete, successful non-streamed answer: the upstream's bytes, passed on untouched."""

    body: bytes


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

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """One streamed attempt: yields each SSE ``data`` payload, stops before ``[DONE]``.

        Raises `AttemptFailed` from the first ``__anext__`` when the attempt fails before its
        first chunk, and from a later one when the stream breaks.
        """

    async def aclose(self) -> None:
        """Close the connection pool."""
