"""The one exception handler: every error leaves in OpenAI's shape, with the request id when
there is one; nothing else (framework errors included) reaches a client with a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.errors import FrameworkError, GatewayError

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
    return Response(
        exc.encode(), status_code=exc.status_code, media_type="application/json", headers=headers
    )


def _translate(exc: Exception) -> GatewayError:
    """Framework errors (unknown path, wrong method) and bugs, in the same shape."""
    if isinstance(exc, HTTPException):
        return FrameworkError(exc.status_code, str(exc.detail))
    log.exception("unhandled error", exc_info=exc)
    return GatewayError("The gateway failed to handle the request.", code="internal_error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: render_error}
