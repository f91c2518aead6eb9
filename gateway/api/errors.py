"""The one exception handler: every error leaves in the shape of the API its door speaks, with
the request id when there is one; nothing else (framework errors included) reaches a client
with a stack trace.

OpenAI's shape everywhere, but under ``/v1/messages`` (the Anthropic Messages door), where it
is Anthropic's: ``{"type": "error", "error": {"type", "message"}}``, with Anthropic's statuses
(``overloaded_error`` is 529), so that each SDK raises its usual exceptions.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.errors import FrameworkError, GatewayError, Overloaded

log = logging.getLogger(__name__)


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if not isinstance(exc, GatewayError):
        exc = _translate(exc)
    log.log(
        exc.log_level,
        "%s %s -> %s: %s",
        request.method,
        request.url.path,
        exc.status_code,
        exc.message,
    )
    headers = dict(exc.headers)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["x-gateway-request-id"] = request_id
    if request.url.path.startswith(ANTHROPIC_PREFIX):
        status, body = anthropic_error(exc)
        return Response(
            msgspec.json.encode(body),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )
    return Response(
        exc.encode(), status_code=exc.status_code, media_type="application/json", headers=headers
    )


ANTHROPIC_PREFIX = "/v1/messages"
"""The paths whose errors take Anthropic's shape."""
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(exc: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and body of ``exc`` in Anthropic's shape (also the data of a stream's
    ``error`` event). The gateway's own overload (`Overloaded`) is Anthropic's 529."""
    status = 529 if isinstance(exc, Overloaded) else exc.status_code
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": exc.message}}


def _translate(exc: Exception) -> GatewayError:
    """Framework errors (unknown path, wrong method) and bugs, in the same shape."""
    if isinstance(exc, HTTPException):
        return FrameworkError(exc.status_code, str(exc.detail))
    log.exception("unhandled error", exc_info=exc)
    return GatewayError("The gateway failed to handle the request.", code="internal_error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: render_error}
