from __future__ import annotations

import msgspec

from gateway.errors import (
    BadRequest,
    ModelNotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamClientError,
    UpstreamUnavailable,
)


def test_openai_shape_and_status() -> None:
    for error, status, type_ in [
        (BadRequest("m", param="messages"), 400, "invalid_request_error"),
        (Unauthorized("m"), 401, "authentication_error"),
        (ModelNotFound("m"), 404, "invalid_request_error"),
        (PayloadTooLarge("m"), 413, "invalid_request_error"),
    ]:
        assert error.status_code == status
        body = msgspec.json.decode(error.encode())
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == type_
    assert (
        msgspec.json.decode(BadRequest("m", param="messages").encode())["error"]["param"]
        == "messages"
    )
    assert ModelNotFound("m").code == "model_not_found"


def test_upstream_client_error_keeps_the_upstream_body() -> None:
    upstream = {
        "error": {
            "message": "bad temp",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    error = UpstreamClientError(422, upstream, "HTTP 422: bad temp")
    assert error.status_code == 422 and error.body() == upstream
    reshaped = UpstreamClientError(400, {"detail": "nope"}, "HTTP 400: nope").body()
    assert reshaped["error"]["message"] == "HTTP 400: nope"


def test_upstream_unavailable_lists_attempts() -> None:
    attempts = [{"model": "a", "error": "HTTP 500", "status": 500, "elapsed_ms": 1.0}]
    error = UpstreamUnavailable(502, "all failed", "upstream_error", attempts)
    assert error.status_code == 502
    assert error.body()["error"]["attempts"] == attempts
