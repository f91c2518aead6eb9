"""Text Generation Inference's generate API, translated to and from OpenAI Chat Completions.

For a model served by TGI (or a container that speaks its shapes) behind a managed endpoint
(``container.format: tgi`` of ``sagemaker`` and ``azure_ml``). Pure translation, no I/O: the
provider sends the bytes and hands what comes back to these functions.

The request is ``{"inputs": prompt, "parameters": {...}, "stream": bool}`` (TGI's ``/`` route,
which a scoring URI usually maps to, answers both forms). The prompt is the conversation in one
plain template, the same for every model, because the generate API has no notion of a chat:
each message as ``Role: text`` (System, User, Assistant; developer is System), the messages
joined by a blank line, and ``Assistant:`` last, where the model goes on:

    System: Be brief.\\n\\nUser: 2+2?\\n\\nAssistant:

A chat-tuned model is better served with ``container.format: openai`` (TGI's Messages API, which
applies the model's own chat template); this format is for containers that only generate.

Translated: ``max_completion_tokens``/``max_tokens`` -> ``max_new_tokens``, ``temperature``
(0 -> greedy, ``do_sample: false``), ``top_p`` (1 is TGI's "off": left out), ``stop`` (TGI takes
at most 4 by default), ``seed``, ``frequency_penalty``. Refused with a 400 naming the field,
since generate cannot honour them: tools and function calling, tool messages, images and audio,
``response_format`` other than text, ``logprobs``, ``n`` > 1. Other fields (``user``,
``metadata``, ``stream_options``...) change nothing a model server does and are not sent.

Answers: ``[{"generated_text": ..., "details": {...}}]`` (or the bare object, from
``/generate``) becomes a ``chat.completion``; ``details.finish_reason`` ``length`` stays
``length``, ``eos_token`` and ``stop_sequence`` become ``stop``. Usage is reported only when
TGI counted both sides (``details.prefill``, asked for with ``decoder_input_details`` on
non-streamed requests, and ``details.generated_tokens``); otherwise none is made up and the
gateway counts or estimates. A stream's lines (``{"token": {"text", "special"}, "details":
null}`` ..., the last with ``details``) become ``chat.completion.chunk`` payloads (`TgiStream`);
TGI does not count a streamed prompt, so a stream carries no usage chunk.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.providers import AttemptFailed

MAX_STOP_SEQUENCES = 4
"""TGI's default ``--max-stop-sequences``: a request with more gets a 422 from it."""
_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
_REFUSED_IF_SET = ("tools", "functions", "tool_choice", "function_call", "audio", "prediction")
"""Request fields TGI's generate API has no counterpart for, refused whenever present (and not
null)."""


def refused(field: str, why: str) -> AttemptFailed:
    """The client's request asks for what the model server cannot do: a 400 that names the
    field, which the call stage passes on to the client as it is (no retry, no fallback)."""
    message = f"{field}: {why}"
    return AttemptFailed(
        "status",
        f"HTTP 400: {message}",
        status=400,
        body={
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": field,
                "code": "unsupported_parameter",
            }
        },
    )


def tgi_request(body: dict[str, Any]) -> dict[str, Any]:
    """The generate request for a chat body; raises `refused` for what generate cannot do."""
    for field in _REFUSED_IF_SET:
        if body.get(field) is not None:
            raise refused(field, "tool and function calling need container.format openai")
    if body.get("logprobs"):
        raise refused("logprobs", "not available from TGI's generate API")
    if (body.get("n") or 1) != 1:
        raise refused("n", "TGI's generate API answers one choice")
    response_format = body.get("response_format")
    if response_format is not None and response_format.get("type") != "text":
        raise refused("response_format", "structured output needs container.format openai")
    stream = bool(body.get("stream"))
    return {
        "inputs": prompt(body.get("messages") or []),
        "parameters": _parameters(body, stream),
        "stream": stream,
    }


def prompt(messages: list[dict[str, Any]]) -> str:
    """The conversation in the module's plain template, ending where the assistant speaks."""
    turns = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.get("role", ""))
        if role is None:
            raise refused(f"messages[{i}].role", f"{message.get('role')!r} messages need tools")
        if message.get("tool_calls"):
            raise refused(f"messages[{i}].tool_calls", "tool calls need container.format openai")
        turns.append(f"{role}: {_text(message.get('content'), i)}")
    turns.append("Assistant:")
    return "\n\n".join(turns)


def _text(content: Any, i: int) -> str:
    """A message's text: a string, or its text parts joined; any other part is refused."""
    if content is None or isinstance(content, str):
        return content or ""
    pieces = []
    for j, part in enumerate(content):
        if part.get("type") != "text":
            raise refused(f"messages[{i}].content[{j}]", f"{part.get('type')!r} parts: text only")
        pieces.append(part.get("text", ""))
    return "".join(pieces)


def _parameters(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"return_full_text": False, "details": True}
    if not stream:
        out["decoder_input_details"] = True  # the prompt's tokens (TGI refuses it on streams)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        out["max_new_tokens"] = limit
    temperature = body.get("temperature")
    if temperature == 0:
        out["do_sample"] = False
    elif temperature is not None:
        out["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None and top_p < 1:
        out["top_p"] = top_p
    stop = body.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else list(stop)
        if len(stops) > MAX_STOP_SEQUENCES:
            raise refused("stop", f"TGI takes at most {MAX_STOP_SEQUENCES} stop sequences")
        out["stop"] = stops
    for name in ("seed", "frequency_penalty"):
        if body.get(name) is not None:
            out[name] = body[name]
    return out


class _Details(msgspec.Struct):
    finish_reason: str = "eos_token"
    generated_tokens: int | None = None
    prefill: list[Any] | None = None


class _Generated(msgspec.Struct):
    generated_text: str
    details: _Details | None = None


def completion_from_tgi(payload: bytes, model: str) -> dict[str, Any]:
    """A ``chat.completion`` for TGI's answer (a one-item list, or the bare object)."""
    try:
        answer = msgspec.json.decode(payload, type=list[_Generated] | _Generated)
    except msgspec.MsgspecError as exc:
        raise AttemptFailed("protocol", f"unreadable TGI answer: {exc}") from exc
    if isinstance(answer, list):
        if len(answer) != 1:
            raise AttemptFailed("protocol", f"expected one TGI generation, got {len(answer)}")
        answer = answer[0]
    details = answer.details or _Details()
    out = _base(f"chatcmpl-{uuid.uuid4().hex}", model, "chat.completion")
    message = {"role": "assistant", "content": answer.generated_text}
    out["choices"] = [
        {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(details)}
    ]
    if details.prefill is not None and details.generated_tokens is not None:
        prompt_tokens = len(details.prefill)
        out["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": details.generated_tokens,
            "total_tokens": prompt_tokens + details.generated_tokens,
        }
    return out


class _Token(msgspec.Struct):
    text: str = ""
    special: bool = False


class _StreamLine(msgspec.Struct):
    token: _Token | None = None
    details: _Details | None = None
    error: str | None = None
    error_type: str | None = None


class TgiStream:
    """Translates one TGI stream, line by line, into ``chat.completion.chunk`` payloads.

    Feed it each ``data:`` payload in order; `done` turns True with the line that carries
    ``details`` (TGI sends no ``[DONE]``), after which the stream is complete. Special tokens
    (the end-of-sequence token, mostly) carry no text for the client.
    """

    def __init__(self, model: str) -> None:
        self._base = _base(f"chatcmpl-{uuid.uuid4().hex}", model, "chat.completion.chunk")
        self._started = False
        self.done = False

    def feed(self, payload: bytes) -> list[bytes]:
        """The chat chunks for one TGI stream line (none for a special token)."""
        try:
            line = msgspec.json.decode(payload, type=_StreamLine)
        except msgspec.MsgspecError as exc:
            raise AttemptFailed("protocol", f"unreadable TGI stream line: {exc}") from exc
        if line.error is not None:
            raise _stream_error(line.error, line.error_type)
        out = []
        if line.token is not None and not line.token.special and line.token.text:
            delta: dict[str, Any] = {"content": line.token.text}
            if not self._started:
                delta = {"role": "assistant", **delta}
            self._started = True
            out.append(self._chunk(delta, None))
        if line.details is not None:
            self.done = True
            out.append(self._chunk({} if self._started else {"role": "assistant"}, line.details))
        return out

    def _chunk(self, delta: dict[str, Any], details: _Details | None) -> bytes:
        finish = None if details is None else _finish(details)
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return msgspec.json.encode({**self._base, "choices": [choice]})


def _base(id_: str, model: str, kind: str) -> dict[str, Any]:
    return {"id": id_, "object": kind, "created": int(time.time()), "model": model}


def _finish(details: _Details) -> str:
    return _FINISH.get(details.finish_reason, "stop")


def _stream_error(error: str, error_type: str | None) -> AttemptFailed:
    """A stream's error line: ``overloaded`` is worth a retry elsewhere (503), ``validation`` is
    the request's fault (422); anything else broke the generation."""
    message = f"TGI {error_type or 'error'}: {error}"
    if error_type == "overloaded":
        return AttemptFailed("status", f"HTTP 503: {message}", status=503)
    if error_type == "validation":
        body = {"error": {"message": error, "type": "invalid_request_error"}}
        return AttemptFailed("status", f"HTTP 422: {message}", status=422, body=body)
    return AttemptFailed("protocol", message)
