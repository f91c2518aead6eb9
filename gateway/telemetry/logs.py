"""Structured logs: one JSON object per line, and one line per request from its ledger record.

Logging stays the standard library's (so uvicorn's and the libraries' lines come out the same
way); `JsonFormatter` renders every record as JSON and merges the structured ``fields`` a
record carries. The per-request line (logger ``gateway.request``) never holds prompt or
completion text unless the caller passes the text *and* says so (the policy's
``telemetry.log_prompts``): two separate decisions, so that passing the text by habit cannot
leak it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from gateway.ledger.record import LedgerRecord

REQUEST_LOGGER = "gateway.request"
_request_log = logging.getLogger(REQUEST_LOGGER)
_encoder = msgspec.json.Encoder(enc_hook=repr)
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields}``; time is UTC ISO 8601 with ms."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        for key, value in record.__dict__.items():  # other ``extra=`` keys
            if key not in _STANDARD and key != "fields":
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return _encoder.encode(out).decode()


class TextFormatter(logging.Formatter):
    """A human's line: time, level, logger, message, then the fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line += "".join(f" {k}={_text(v)}" for k, v in fields.items() if v is not None)
        return line


def configure_logging(
    level: str = "info", fmt: Literal["json", "text"] = "json", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``fmt``; replaces the root's
    handlers. Give uvicorn ``log_config=None`` so that its lines come here too."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def log_request(
    record: LedgerRecord,
    *,
    trace_id: str | None = None,
    prompt: str | None = None,
    completion: str | None = None,
    include_text: bool = False,
    logger: logging.Logger = _request_log,
) -> None:
    """Log the request line (INFO, logger ``gateway.request``) from its ledger record.

    ``prompt`` and ``completion`` are written only when ``include_text`` is true as well."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {
        "event": "request",
        "request_id": record.request_id,
        "tenant": record.tenant,
        "route": record.route,
        "model": record.model,
        "cache": record.cache,
        "status": record.status,
        "stream": record.stream,
        "input_tokens": record.input_tokens,
        "cached_input_tokens": record.cached_input_tokens,
        "output_tokens": record.output_tokens,
        "estimated": record.estimated,
        "cost_usd": None if record.cost_usd is None else float(record.cost_usd),
        "baseline_cost_usd": (
            None if record.baseline_cost_usd is None else float(record.baseline_cost_usd)
        ),
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
        "difficulty": record.difficulty,
        "category": record.category,
    }
    if record.tags:
        fields["tags"] = record.tags
    if trace_id is not None:
        fields["trace_id"] = trace_id
    if include_text:
        if prompt is not None:
            fields["prompt"] = prompt
        if completion is not None:
            fields["completion"] = completion
    # makeRecord + handle rather than info(): the same record, without the search of the
    # stack for the caller's file and line, which a request line does not need.
    logger.handle(
        logger.makeRecord(
            logger.name, logging.INFO, "", 0, "request", (), None, extra={"fields": fields}
        )
    )


_second: list[tuple[int, str]] = [(-1, "")]


def _iso(created: float) -> str:
    seconds = int(created)
    last, prefix = _second[0]
    if seconds != last:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = (seconds, prefix)
    return f"{prefix}.{int((created - seconds) * 1000):03d}Z"


def _text(value: object) -> str:
    text = (
        str(value)
        if not isinstance(value, Mapping)
        else ",".join(f"{k}={v}" for k, v in value.items())
    )
    return f'"{text}"' if " " in text or not text else text
