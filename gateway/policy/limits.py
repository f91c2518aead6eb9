"""The policy's limits: what one request, one tenant and the whole server may use.

- `Limits` (``limits:``): the server's, per replica: body size, concurrent requests and the
  queue before them, and the size of client-controlled values that grow server state (tags,
  session ids).
- `TenantLimits` (``tenants.<name>.limits:``): a tenant's requests and tokens per minute and its
  concurrent requests, shared by every replica through Redis when there is one.
- `MaxTokens` (``models.<name>.max_tokens:``): a model's default and ceiling for the answer's
  length, so that a request without one does not run to the context's end.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.policy.types import Seconds, Strict


class Limits(Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Else 413.")
    max_concurrent_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests this replica runs at once (streams count until their end); "
        "unset: no limit. Past it, requests wait in a queue of max_queued.",
    )
    max_queued: int = Field(
        default=0,
        ge=0,
        description="Requests that may wait for one of max_concurrent_requests; past it, 503 "
        "at once with Retry-After.",
    )
    queue_timeout_s: Seconds = Field(
        default=10.0, description="The longest a request waits in the queue before a 503."
    )
    max_tags: int = Field(default=16, ge=0, description="Items of x-gateway-tags, else 400.")
    max_tag_key_chars: int = Field(default=64, ge=1, description="Else 400.")
    max_tag_value_chars: int = Field(default=256, ge=0, description="Else 400.")
    max_session_id_chars: int = Field(default=256, ge=1, description="x-session-id, else 400.")


class TenantLimits(Strict):
    """Rate limits of one tenant; each unset one does not apply. Past one, 429 with
    Retry-After and ``x-ratelimit-*`` headers."""

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests in any 60 s (a sliding window)."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Input plus output tokens, as the ledger counts them, per 60 s window from "
        "the window's first answer; a request is let in while the window has room.",
    )
    max_concurrent_requests: int | None = Field(
        default=None, ge=1, description="Requests of this tenant running at once (all replicas)."
    )

    @property
    def any(self) -> bool:
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.max_concurrent_requests is not None
        )


class MaxTokens(Strict):
    """The answer's length in tokens when the client says none, and the most it may ask for.

    The client's ``max_tokens`` and ``max_completion_tokens`` are both read.
    """

    default: int | None = Field(
        default=None, ge=1, description="Set when the client sends neither field."
    )
    ceiling: int | None = Field(default=None, ge=1, description="The most a client may ask.")
    above_ceiling: Literal["clamp", "reject"] = Field(
        default="reject", description="reject: 400 naming the field; clamp: lower it."
    )
    field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens",
        description="The field the default is sent in (max_completion_tokens for OpenAI's "
        "reasoning models; max_tokens is the one every compatible server reads).",
    )

    @model_validator(mode="after")
    def _default_within_ceiling(self) -> MaxTokens:
        if self.default is not None and self.ceiling is not None and self.default > self.ceiling:
            raise ValueError(f"default ({self.default}) is above ceiling ({self.ceiling})")
        return self
