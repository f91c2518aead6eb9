"""A chat answer written back as an OpenAI Response: its output items, and the stream's events.

One `Output` folds a chat answer in, whole (a ``chat.completion``) or chunk by chunk (the
``chat.completion.chunk`` objects of a stream), into the Response's output items: the text as
a ``message`` item (``msg_...``) with ``output_text`` parts (and a ``refusal`` part when the
model refused), each tool call as a ``function_call`` item (``fc_...``) whose ``call_id`` is
the model's tool call id. Streamed, it also writes the events that tell the items' story in
the API's order (``output_item.added``, ``content_part.added``, ``output_text.delta``...,
``output_text.done``, ``content_part.done``, ``output_item.done``; for a call
``function_call_arguments.delta``... and ``.done``), numbered by ``sequence_number`` from 0,
between one ``response.created`` + ``response.in_progress`` and one terminal event
(``response.completed``, ``response.incomplete`` or ``response.failed``). Both paths share the
one fold, so a streamed Response and a non-streamed one are the same object.

A length stop makes the Response ``incomplete`` (``incomplete_details.reason:
max_output_tokens``), a content filter likewise (``content_filter``). Usage is the chat usage
renamed (input/output tokens, cached and reasoning tokens).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.wire.responses import ResponsesRequest

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""Chat finish reasons that leave a Response incomplete, and the reason the API gives."""
_TIERS = frozenset({"auto", "default", "flex", "scale", "priority"})


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def frame(request: ResponsesRequest, response_id: str, created_at: int) -> dict[str, Any]:
    """The Response before any output: its id and the request's settings, echoed as the API
    does (defaults filled in)."""
    body = request.body
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier"),
        "store": request.store,
        "temperature": body.get("temperature"),
        "text": {"format": {"type": "text"}, **(body.get("text") or {})},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
    }


def usage(chat: Any) -> dict[str, Any] | None:
    """Chat usage in the Responses shape (None when the answer had none)."""
    if not isinstance(chat, dict):
        return None
    prompt, completion = _int(chat.get("prompt_tokens")), _int(chat.get("completion_tokens"))
    prompt_details = chat.get("prompt_tokens_details") or {}
    completion_details = chat.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _int(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _int(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _int(chat.get("total_tokens")) or prompt + completion,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Output:
    """The output of one Response, folded from a chat answer; with ``events``, the SSE events
    that stream it (read them with `take`)."""

    def __init__(self, response: dict[str, Any], *, events: bool) -> None:
        self.response = response
        self.items: list[dict[str, Any]] = []
        self._events: list[bytes] | None = [] if events else None
        self._sequence = 0
        self._message: dict[str, Any] | None = None
        self._part: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self._open_call: dict[str, Any] | None = None
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._started = False

    def take(self) -> list[bytes]:
        """The events written since the last take."""
        events, self._events = self._events or [], [] if self._events is not None else None
        return events

    def start(self) -> None:
        """``response.created`` and ``response.in_progress``, once: before the first chunk's
        events (whose model, the upstream's, they name), or before a failure."""
        if not self._started:
            self._started = True
            self._emit("response.created", response=self.response)
            self._emit("response.in_progress", response=self.response)

    def completion(self, completion: dict[str, Any]) -> None:
        """Fold a whole ``chat.completion``."""
        self._fold(completion, "message")

    def chunk(self, chunk: dict[str, Any]) -> None:
        """Fold one ``chat.completion.chunk``."""
        if not self._started:
            self._model(chunk)
            self.start()
        self._fold(chunk, "delta")

    def finish(self) -> dict[str, Any]:
        """Close the open items; the finished Response (``completed`` or ``incomplete``)."""
        reason = _INCOMPLETE.get(self._finish or "")
        status = "completed" if reason is None else "incomplete"
        self._close_all(status)
        done = {**self.response, "status": status, "output": self.items, "usage": self._usage}
        if reason is None:
            done["completed_at"] = int(time.time())
        else:
            done["incomplete_details"] = {"reason": reason}
        self.response = done
        return done

    def end(self) -> None:
        """The terminal event of a finished Response."""
        self.start()
        self._emit(f"response.{self.response['status']}", response=self.response)

    def fail(self, message: str) -> None:
        """End a broken stream with ``response.failed`` (its items so far, as they are)."""
        self.start()
        error = {"code": "server_error", "message": message}
        failed = {**self.response, "status": "failed", "output": self.items, "error": error}
        self.response = failed
        self._emit("response.failed", response=failed)

    def _model(self, completion: dict[str, Any]) -> None:
        if isinstance(completion.get("model"), str):
            self.response["model"] = completion["model"]

    def _fold(self, completion: dict[str, Any], part: str) -> None:
        self._model(completion)
        if completion.get("service_tier") in _TIERS:
            self.response["service_tier"] = completion["service_tier"]
        if completion.get("usage") is not None:
            self._usage = usage(completion["usage"])
        for choice in completion.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            message = choice.get(part)
            if isinstance(message, dict):
                self._text("output_text", message.get("content"))
                self._text("refusal", message.get("refusal"))
                for i, call in enumerate(message.get("tool_calls") or []):
                    if isinstance(call, dict):
                        self._call(call, i if part == "message" else call.get("index", i))
            self._finish = choice.get("finish_reason") or self._finish

    # -- items and their events -----------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._events is None:
            return
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        self._events.append(
            b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"
        )

    def _add_item(self, item: dict[str, Any]) -> int:
        self.items.append(item)
        self._emit("response.output_item.added", output_index=len(self.items) - 1, item=item)
        return len(self.items) - 1

    def _text(self, kind: str, piece: Any) -> None:
        """Text (``output_text``) or a refusal (``refusal``) added to the message item."""
        if not isinstance(piece, str) or not piece:
            return
        self._close_call("completed")
        if self._message is None:
            self._message = {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self._add_item(self._message)
        message = self._message
        if self._part is None or self._part["type"] != kind:
            self._close_part()
            field = "text" if kind == "output_text" else "refusal"
            extra: dict[str, Any] = (
                {"annotations": [], "logprobs": []} if kind == "output_text" else {}
            )
            self._part = {"type": kind, field: "", **extra}
            message["content"].append(self._part)
            self._emit("response.content_part.added", **self._where(), part=self._part)
        part = self._part
        if kind == "output_text":
            part["text"] += piece
            self._emit("response.output_text.delta", **self._where(), delta=piece, logprobs=[])
        else:
            part["refusal"] += piece
            self._emit("response.refusal.delta", **self._where(), delta=piece)

    def _where(self) -> dict[str, Any]:
        assert self._message is not None
        return {
            "item_id": self._message["id"],
            "output_index": self.items.index(self._message),
            "content_index": len(self._message["content"]) - 1,
        }

    def _close_part(self) -> None:
        part = self._part
        if part is None:
            return
        where = self._where()
        if part["type"] == "output_text":
            self._emit("response.output_text.done", **where, text=part["text"], logprobs=[])
        else:
            self._emit("response.refusal.done", **where, refusal=part["refusal"])
        self._emit("response.content_part.done", **where, part=part)
        self._part = None

    def _close_message(self, status: str) -> None:
        if self._message is None:
            return
        self._close_part()
        self._message["status"] = status
        index = self.items.index(self._message)
        self._emit("response.output_item.done", output_index=index, item=self._message)
        self._message = None

    def _call(self, delta: dict[str, Any], index: int) -> None:
        """A tool call's start or the next piece of its arguments."""
        function = delta.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            self._close_message("completed")
            self._close_call("completed")
            item = {
                "id": f"fc_{uuid.uuid4().hex}",
                "type": "function_call",
                "status": "in_progress",
                "call_id": str(delta.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                "name": str(function.get("name") or ""),
                "arguments": "",
            }
            self._calls[index] = item
            self._open_call = item
            self._add_item(item)
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            where = {"item_id": item["id"], "output_index": self.items.index(item)}
            self._emit("response.function_call_arguments.delta", **where, delta=piece)

    def _close_call(self, status: str) -> None:
        item = self._open_call
        if item is None:
            return
        index = self.items.index(item)
        self._emit(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=item["arguments"],
        )
        item["status"] = status
        self._emit("response.output_item.done", output_index=index, item=item)
        self._open_call = None

    def _close_all(self, status: str) -> None:
        self._close_message(status)
        self._close_call(status)
