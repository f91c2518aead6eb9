"""The errors of the local engine, and the one place that turns them into OpenAI's error shape.

Everything a client can be refused with is an `EngineError`; the HTTP server renders it with
`EngineError.body()` and `EngineError.headers()`, and an in-process caller (the gateway's
``local_engine`` provider) can map it onto its own error tree by its ``status``::

    Exception
    ├── EngineError          an answer for the client, with its HTTP status
    │     400 invalid_request_error   bad body, empty messages, unknown role, n != 1,
    │                                 max_tokens or prompt beyond the context
    │     404 invalid_request_error   model_not_found: body["model"] is not served here
    │     503 server_error            engine_overloaded: the queue is full (Retry-After)
    │     503 server_error            engine_unavailable: not started or its loop died
    │     500 server_error            generation failed inside the engine
    └── ModelLoadError       the model could not be found, converted or loaded (start-up only)

Constructors below (`bad_request`, `model_not_found`, ...) keep the types and codes in one place.
"""

from __future__ import annotations

import math
from typing import Any


class EngineError(Exception):
    """An error answered to the client with ``status`` and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (rounded up) when the error says when to retry."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def __repr__(self) -> str:
        return f"EngineError({self.status}, {self.message!r}, code={self.code!r})"


class ModelLoadError(Exception):
    """The model could not be resolved, converted or loaded; the message is one line."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> EngineError:
    return EngineError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str, served: str) -> EngineError:
    return EngineError(
        404,
        f"The model '{model}' does not exist on this engine; it serves '{served}'.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def overloaded(retry_after: float) -> EngineError:
    return EngineError(
        503,
        "The engine's queue is full; retry after the delay in Retry-After.",
        "server_error",
        None,
        "engine_overloaded",
        retry_after,
    )


def unavailable() -> EngineError:
    return EngineError(
        503,
        "The engine is not running (not started, stopped, or its generation loop failed).",
        "server_error",
        None,
        "engine_unavailable",
    )


def internal(message: str) -> EngineError:
    return EngineError(500, message, "server_error", None, "generation_failed")
