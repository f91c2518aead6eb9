"""A fake SageMaker runtime: InvokeEndpoint and InvokeEndpointWithResponseStream on a real HTTP
server on 127.0.0.1, in front of a container that speaks OpenAI's chat (``openai``) or TGI's
generate API (``tgi``).

Every request's SigV4 signature is recomputed with botocore's signer (a mismatch is a 403);
with ``component`` set, a request must name that inference component in
``X-Amzn-SageMaker-Inference-Component`` (a 400 ``ValidationException`` otherwise, as
SageMaker answers). ``openai`` answers are `tests.fake_upstream`'s, under the name
``sagemaker``; ``tgi`` answers ``sagemaker says: <the prompt's last User line>``. A stream's
bytes (SSE) go out in ``PayloadPart`` frames cut every ``part_sizes`` bytes in turn, so lines
are split across parts. A test scripts faults (`SageMakerFault`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tests.fake_upstream import chunks, completion
from tests.fakes.aws import (
    Signed,
    check_signature,
    event,
    exception,
    send_frames,
    send_json,
)
from tests.servers import ScriptedServer, read_body, read_headers

COMPONENT = "x-amzn-sagemaker-inference-component"


@dataclass(frozen=True)
class SageMakerFault:
    status: int | None = None
    error_type: str = ""
    original_status: int | None = None
    """With ``ModelError`` (424): the status the container answered."""
    stream_exception: str | None = None
    """Streams: send this exception frame after ``after_parts`` payload parts."""
    after_parts: int = 0


@dataclass
class Received:
    endpoint: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    signed: Signed


class FakeSageMaker(ScriptedServer[Received, SageMakerFault]):
    def __init__(self) -> None:
        super().__init__(SageMakerFault())
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.format = "openai"
        """What the container speaks: openai or tgi."""
        self.component: str | None = None
        """The inference component a request must name."""
        self.part_sizes: tuple[int, ...] = (4096,)
        """A stream's bytes go out in payload parts of these sizes, in turn."""

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = await read_body(receive)
        headers = read_headers(scope)
        parts = scope["raw_path"].decode().split("/")
        operations = ("invocations", "invocations-response-stream")
        if len(parts) != 4 or parts[1] != "endpoints" or parts[3] not in operations:
            await send_json(send, 404, {"message": "no such route"}, "UnknownOperationException")
            return
        signed = check_signature(scope, headers, raw, "sagemaker")
        body = json.loads(raw) if raw else {}
        endpoint = unquote(parts[2])
        fault = self.received(Received(endpoint, parts[3], headers, body, signed))
        if not signed.ok:
            await send_json(send, 403, {"message": signed.problem}, "InvalidSignatureException")
            return
        if self.component is not None and headers.get(COMPONENT) != self.component:
            message = {"message": "Inference Component Name header is required"}
            await send_json(send, 400, message, "ValidationException")
            return
        if fault.status is not None:
            error: dict[str, Any] = {"message": f"injected {fault.error_type}"}
            if fault.original_status is not None:
                error |= {"OriginalStatusCode": fault.original_status}
            await send_json(send, fault.status, error, fault.error_type)
            return
        if parts[3] == "invocations":
            await send_json(send, 200, self._answer(endpoint, body))
            return
        data = self._stream(endpoint, body)
        sizes = itertools.cycle(self.part_sizes)
        pieces, at = [], 0
        while at < len(data):
            size = next(sizes)
            pieces.append(data[at : at + size])
            at += size
        frames = [event("PayloadPart", piece) for piece in pieces]
        if fault.stream_exception is not None:
            frames = frames[: fault.after_parts]
            frames.append(exception(fault.stream_exception, "injected"))
        await send_frames(send, frames)

    def _answer(self, endpoint: str, body: dict[str, Any]) -> Any:
        if self.format == "openai":
            return completion("sagemaker", {**body, "model": endpoint})
        text = tgi_text(body)
        prompt_tokens = len(body["inputs"].split())
        details = {"finish_reason": "eos_token", "generated_tokens": len(text.split())}
        if body["parameters"].get("decoder_input_details"):
            details["prefill"] = [{"id": i, "text": "t"} for i in range(prompt_tokens)]
        return [{"generated_text": text, "details": details}]

    def _stream(self, endpoint: str, body: dict[str, Any]) -> bytes:
        if self.format == "openai":
            return b"".join(chunks("sagemaker", {**body, "model": endpoint}))
        text = tgi_text(body)
        words = text.split(" ")
        lines = []
        for i, word in enumerate(words):
            token = {"id": i, "text": word if i == 0 else " " + word, "special": False}
            lines.append({"index": i, "token": token, "generated_text": None, "details": None})
        details = {"finish_reason": "eos_token", "generated_tokens": len(words) + 1, "seed": None}
        eos = {"id": 2, "text": "</s>", "special": True}
        lines.append(
            {"index": len(words), "token": eos, "generated_text": text, "details": details}
        )
        return b"".join(f"data:{json.dumps(line)}\n\n".encode() for line in lines)


def tgi_text(body: dict[str, Any]) -> str:
    user = [t for t in body["inputs"].split("\n\n") if t.startswith("User: ")]
    return f"sagemaker says: {user[-1][len('User: ') :] if user else ''}"
