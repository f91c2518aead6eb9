"""OpenAI's Batch API objects, as the official SDK reads them: the File, the Batch, the lines of
an input file and of the output and error files.

A batch's input file is checked whole before any line runs (``validating``), as OpenAI does:
every line a JSON object with a ``custom_id`` unique in the file, ``method`` ``POST``, the
batch's endpoint as ``url`` and an object as ``body``. A file that fails the check fails the
batch, with one error per bad line (at most `MAX_ERRORS`), and no line runs.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
COMPLETION_WINDOW_S = 24 * 3600
"""``completion_window``: ``24h`` is the one value OpenAI takes."""
MAX_ERRORS = 100
"""Validation errors reported per file; a file of garbage is not echoed line by line."""

Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
UNFINISHED: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def new_id(prefix: str) -> str:
    """``file-…``, ``batch_…``, ``batch_req_…``: OpenAI's prefixes and a random part."""
    return f"{prefix}{secrets.token_hex(12)}"


def file_object(
    file_id: str, size: int, filename: str, purpose: str, created_at: int | None = None
) -> dict[str, Any]:
    """The File object (``status`` is deprecated upstream; ``processed`` as OpenAI sends it)."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at if created_at is not None else int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def batch_object(
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    total: int,
    metadata: dict[str, str] | None,
) -> dict[str, Any]:
    """A new batch, ``validating`` (its lines are counted once the file is checked)."""
    now = int(time.time())
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + COMPLETION_WINDOW_S,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": total, "completed": 0, "failed": 0},
        "metadata": metadata,
    }


@dataclass(frozen=True, slots=True)
class Line:
    """One request of an input file: its 0-based position, ``custom_id`` and body."""

    index: int
    custom_id: str
    body: dict[str, Any]


class _RawLine(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


def read_lines(
    data: bytes, endpoint: str, max_lines: int
) -> tuple[list[Line], list[dict[str, Any]]]:
    """The file's lines, or the errors that fail the batch (OpenAI's ``errors.data`` items,
    ``line`` counted from 1)."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        problem = _check(raw, endpoint, seen)
        if isinstance(problem, Line):
            lines.append(Line(len(lines), problem.custom_id, problem.body))
        elif len(errors) < MAX_ERRORS:
            errors.append(_error(*problem, number))
    if not lines and not errors:
        errors.append(_error("empty_file", "The input file has no requests.", None))
    if len(lines) > max_lines:
        errors.append(
            _error(
                "too_many_requests",
                f"The file has {len(lines)} requests; this gateway takes at most {max_lines} "
                "per batch.",
                None,
            )
        )
    return (lines, []) if not errors else ([], errors)


def _check(raw: bytes, endpoint: str, seen: set[str]) -> Line | tuple[str, str]:
    try:
        line = msgspec.json.decode(raw, type=_RawLine)
    except msgspec.DecodeError as exc:
        return "invalid_json_line", f"This line is not a valid request: {exc}"
    if line.method != "POST":
        return "invalid_method", f"'method' must be POST, not {line.method!r}."
    if line.url != endpoint:
        return "mismatched_url", f"'url' is {line.url!r}; this batch's endpoint is {endpoint!r}."
    if line.custom_id in seen:
        return "duplicate_custom_id", f"The custom_id {line.custom_id!r} is used twice."
    if line.body.get("stream"):
        return "invalid_request", "Lines of a batch cannot be streamed ('stream': true)."
    seen.add(line.custom_id)
    return Line(-1, line.custom_id, line.body)


def _error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def output_line(line: Line, request_id: str, status: int, body: Any) -> bytes:
    """A line of the output file (a 2xx answer) or of the error file (any other status): the
    ``response`` the endpoint gave, its body as JSON."""
    entry = {
        "id": new_id("batch_req_"),
        "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }
    return msgspec.json.encode(entry)


def failed_line(line: Line, code: str, message: str) -> bytes:
    """A line of the error file for a request that got no response at all."""
    entry = {
        "id": new_id("batch_req_"),
        "custom_id": line.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return msgspec.json.encode(entry)
