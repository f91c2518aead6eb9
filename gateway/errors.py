"""The one error tree of the gateway; every error a client can see is one of these.

Each error knows its HTTP status, its OpenAI error ``type`` and ``code``, and the level it is
logged at, so one handler (``api.render_error``) turns any of them into OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``::

    GatewayError
    ├── BadRequest            400  invalid_request_error
    ├── Unauthorized          401  authentication_error
    ├── Forbidden             403  permission_error
    ├── ModelNotFound         404  invalid_request_error / model_not_found
    ├── PayloadTooLarge       413  invalid_request_error / request_too_large
    ├── UnsupportedMediaType  415  invalid_request_error / unsupported_media_type
    ├── BudgetExceeded        429  insufficient_quota / budget_exceeded
    ├── RateLimited           429  requests or tokens / rate_limit_exceeded (a tenant's limits)
    ├── ClientClosedRequest   499  the client went away before the answer (ledger only)
    ├── Overloaded            503  api_error / overloaded (the server-wide queue is full)
    ├── UpstreamClientError   4xx  the upstream's own client error, passed on with its status
    ├── UpstreamUnavailable   502 / 503 / 504 after every retry and fallback failed
    └── FrameworkError        the HTTP layer's own refusals (unknown path, wrong method)

Lower-layer errors (httpx, msgspec, pydantic) are translated into these at the boundary that
sees them (``normalize``, ``providers``), never further in.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec


class GatewayError(Exception):
    """Base of every error that is rendered to a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    log_level: ClassVar[int] = logging.ERROR
    before_any_model: ClassVar[bool] = False
    """Refused before any model was called, so the request certainly cost nothing (its ledger
    record says $0, not unpriced); False where a model may have been reached."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        self.status_code = status if status is not None else self.status

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body())


class BadRequest(GatewayError):
    status = 400
    before_any_model = True
    type = "invalid_request_error"
    log_level = logging.INFO


class Unauthorized(GatewayError):
    status = 401
    before_any_model = True
    type = "authentication_error"
    default_code = "invalid_api_key"
    log_level = logging.INFO


class Forbidden(GatewayError):
    status = 403
    before_any_model = True
    type = "permission_error"
    log_level = logging.INFO


class ModelNotFound(GatewayError):
    status = 404
    before_any_model = True
    type = "invalid_request_error"
    default_code = "model_not_found"
    log_level = logging.INFO


class PayloadTooLarge(GatewayError):
    status = 413
    before_any_model = True
    type = "invalid_request_error"
    default_code = "request_too_large"
    log_level = logging.INFO


class UnsupportedMediaType(GatewayError):
    status = 415
    before_any_model = True
    type = "invalid_request_error"
    default_code = "unsupported_media_type"
    log_level = logging.INFO


class BudgetExceeded(GatewayError):
    status = 429
    before_any_model = True
    type = "insufficient_quota"
    default_code = "budget_exceeded"
    log_level = logging.INFO


class RateLimited(GatewayError):
    """A tenant's requests, tokens or concurrent requests per the policy's ``limits``; OpenAI's
    ``type`` says which (``requests`` or ``tokens``), its headers when to come back."""

    status = 429
    before_any_model = True
    type = "requests"
    default_code = "rate_limit_exceeded"
    log_level = logging.INFO


class TokensRateLimited(RateLimited):
    type = "tokens"


class ClientClosedRequest(GatewayError):
    """The client went away while its request ran; nobody reads this, the ledger records it
    (nginx's 499). A model may have been reached, so its cost is unknown."""

    status = 499
    type = "invalid_request_error"
    default_code = "client_closed_request"
    log_level = logging.INFO


class Overloaded(GatewayError):
    """The server's concurrent requests and its queue are full: a fast refusal, not a wait."""

    status = 503
    before_any_model = True
    type = "api_error"
    default_code = "overloaded"
    log_level = logging.WARNING


class UpstreamClientError(GatewayError):
    """The upstream refused the request as the client's mistake (400, 413, 422...).

    Retrying or falling back cannot help, so the upstream's status and error body are passed
    on unchanged (the body is re-shaped only when the upstream did not use OpenAI's shape).
    """

    type = "invalid_request_error"
    log_level = logging.INFO

    def __init__(self, status: int, upstream_body: dict[str, Any], message: str) -> None:
        super().__init__(message, status=status)
        self._upstream_body = upstream_body

    def body(self) -> dict[str, Any]:
        if isinstance(self._upstream_body.get("error"), dict):
            return self._upstream_body
        return super().body()


class UpstreamUnavailable(GatewayError):
    """Every attempt on the chosen model and its fallbacks failed.

    The body lists each attempt so an operator can see, in one response, which provider failed
    how; ``error.code`` says what the last attempt ran into.
    """

    type = "api_error"
    log_level = logging.WARNING

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        attempts: list[dict[str, Any]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, headers=headers, status=status)
        self.attempts = attempts

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["attempts"] = self.attempts
        return body


class FrameworkError(GatewayError):
    type = "invalid_request_error"
    log_level = logging.INFO

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)
