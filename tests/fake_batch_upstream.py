"""A fake of the hosted batch APIs: a real HTTP server on 127.0.0.1 in the exact wire formats
of OpenAI's Files and Batch API (``/v1/files``, ``/v1/batches``), Anthropic's Message
Batches (``/v1/messages/batches``) and Bedrock's batch inference (S3 ``PUT``/``GET`` of
objects, path-style, and the ``/model-invocation-job`` control plane, each checked for a SigV4
signature of its service), counting every batch submitted and every line in it. It also
answers live chat calls (``/v1/chat/completions``), counted in `FakeBatches.live`.

A batch stays ``in_progress`` while the fake is held (`FakeBatches.hold`), and otherwise ends
on its next status check as `FakeBatches.end_as` says: ``completed`` (each line answered as the
live fakes answer it: "<name> says: <last user message>"; a line whose message contains
``REFUSE`` gets a 400 in the error file), ``expired`` (no line answered: OpenAI lists each in
the error file as ``batch_expired``; Anthropic's results say ``expired``) or ``failed``
(OpenAI and Bedrock). A cancelled batch ends ``cancelled`` with no line answered.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fake_upstream import completion
from tests.servers import ScriptedServer, read_body, read_headers

Send = Any
Receive = Any
ANTHROPIC_KEY = "sk-ant-batch-key"
BUCKET = "gw-batches"
JOB_ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
_BEDROCK_STATUS = {
    "in_progress": "InProgress",
    "completed": "Completed",
    "failed": "Failed",
    "expired": "Expired",
    "cancelled": "Stopped",
}


@dataclass
class Submitted:
    """One batch as the fake received it."""

    api: str
    """``openai``, ``anthropic`` or ``bedrock``."""
    id: str
    lines: dict[str, dict[str, Any]]
    """Each line's body (OpenAI), params (Anthropic) or modelInput (Bedrock), by custom id."""
    status: str = "in_progress"
    cancelled: bool = False
    output: str = ""
    """Bedrock: the job's output prefix (s3://...)."""


@dataclass
class FakeBatches(ScriptedServer[Submitted, None]):
    name: str = "batchy"
    hold: bool = False
    end_as: str = "completed"
    cancels: list[str] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)
    """Live chat calls' bodies."""
    objects: dict[str, bytes] = field(default_factory=dict)
    """The fake S3's objects, by ``bucket/key``."""
    problems: list[str] = field(default_factory=list)
    _files: dict[str, bytes] = field(default_factory=dict)
    _batches: dict[str, Submitted] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(None)

    def _cleared(self) -> None:
        self.hold, self.end_as = False, "completed"
        self.cancels.clear()
        self.live.clear()
        self.objects.clear()
        self.problems.clear()
        self._files.clear()
        self._batches.clear()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def prompts(self) -> list[str]:
        """The last user message of every line of every batch submitted (a repeat shows)."""
        with self._lock:
            return [_prompt(body) for s in self.requests for body in s.lines.values()]

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        headers, path, method = read_headers(scope), scope["path"], scope["method"]
        with self._lock:
            found = self._route(method, path, headers, raw)
        if found is None:
            found = 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
        status, body = found
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        kind = b"application/jsonl" if isinstance(body, bytes) else b"application/json"
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}
        )
        await send({"type": "http.response.body", "body": content})

    def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any] | None:
        if path.startswith("/v1/messages/batches"):
            if (
                headers.get("x-api-key") != ANTHROPIC_KEY
                or headers.get("anthropic-version") != "2023-06-01"
            ):
                return 401, {"type": "error", "error": {"type": "authentication_error"}}
            return self._anthropic(method, path.removeprefix("/v1/messages/batches"), raw)
        if path.startswith("/model-invocation-job"):
            self._signed(headers, "bedrock")
            return self._bedrock(method, path.removeprefix("/model-invocation-job"), raw)
        if path.startswith(f"/{BUCKET}/"):
            self._signed(headers, "s3")
            return self._s3(method, path.removeprefix("/"), raw)
        if method == "POST" and path == "/v1/chat/completions":
            self.live.append(json.loads(raw))
            return 200, completion(self.name, self.live[-1])
        if method == "POST" and path == "/v1/files":
            return self._upload(headers, raw)
        if match := re.fullmatch(r"/v1/files/([\w-]+)/content", path):
            data = self._files.get(match[1])
            return None if data is None else (200, data)
        if method == "POST" and path == "/v1/batches":
            return self._create_openai(json.loads(raw))
        if match := re.fullmatch(r"/v1/batches/([\w-]+)(/cancel)?", path):
            batch = self._batches.get(match[1])
            if batch is None:
                return None
            if match[2]:
                self._cancel(batch)
            return 200, self._openai_object(batch)
        return None

    # -- OpenAI ---------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        boundary = headers["content-type"].split("boundary=", 1)[1].strip('"').encode()
        fields: dict[str, bytes] = {}
        for part in raw.split(b"--" + boundary)[1:-1]:
            head, _, value = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]+)"', head)
            if name:
                fields[name[1].decode()] = value.removesuffix(b"\r\n")
        if fields.get("purpose") != b"batch" or "file" not in fields:
            self.problems.append("an upload without purpose batch or a file")
            return 400, {"error": {"message": "purpose batch and a file", "type": "invalid"}}
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self._files[file_id] = fields["file"]
        size = len(fields["file"])
        return 200, {"id": file_id, "object": "file", "bytes": size, "purpose": "batch"}

    def _create_openai(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            self.problems.append(
                f"a batch for {body.get('endpoint')} in {body.get('completion_window')}"
            )
        data = self._files.get(body.get("input_file_id", ""))
        if data is None:
            return 404, {"error": {"message": "no such file", "type": "invalid_request_error"}}
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        for line in lines:
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                self.problems.append(f"a line to {line.get('method')} {line.get('url')}")
        batch = Submitted(
            "openai",
            f"batch_{uuid.uuid4().hex[:12]}",
            {ln["custom_id"]: ln["body"] for ln in lines},
        )
        self._batches[batch.id] = batch
        self.requests.append(batch)
        return 200, self._openai_object(batch)

    def _openai_object(self, batch: Submitted) -> dict[str, Any]:
        self._advance(batch)
        obj: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": len(batch.lines), "completed": 0, "failed": 0},
        }
        if batch.status in ("completed", "expired", "cancelled"):
            ok, failed = self._openai_results(batch)
            for key, lines in (("output_file_id", ok), ("error_file_id", failed)):
                if lines:
                    file_id = f"file-{uuid.uuid4().hex[:12]}"
                    self._files[file_id] = b"".join(json.dumps(ln).encode() + b"\n" for ln in lines)
                    obj[key] = file_id
        return obj

    def _openai_results(self, batch: Submitted) -> tuple[list[Any], list[Any]]:
        ok, failed = [], []
        for custom_id, body in batch.lines.items():
            entry: dict[str, Any] = {"id": f"batch_req_{custom_id}", "custom_id": custom_id}
            if batch.status != "completed":
                code = "batch_expired" if batch.status == "expired" else "batch_cancelled"
                failed.append({**entry, "response": None, "error": {"code": code, "message": code}})
            elif "REFUSE" in _prompt(body):
                error = {"message": "refused", "type": "invalid_request_error", "code": "refused"}
                response = {"status_code": 400, "request_id": "r", "body": {"error": error}}
                failed.append({**entry, "response": response, "error": None})
            else:
                response = {
                    "status_code": 200,
                    "request_id": "r",
                    "body": completion(self.name, body),
                }
                ok.append({**entry, "response": response, "error": None})
        return ok, failed

    # -- both -----------------------------------------------------------------------------

    def _advance(self, batch: Submitted) -> None:
        """A held batch stays in progress; else it ends on its next status check."""
        if batch.status == "in_progress" and batch.cancelled:
            batch.status = "cancelled"
        elif batch.status == "in_progress" and not self.hold:
            batch.status = self.end_as

    def _cancel(self, batch: Submitted) -> None:
        self.cancels.append(batch.id)
        batch.cancelled = True

    # -- Bedrock batch inference -----------------------------------------------------------

    def _signed(self, headers: dict[str, str], service: str) -> None:
        auth = headers.get("authorization", "")
        if not (auth.startswith("AWS4-HMAC-SHA256 Credential=") and f"/{service}/aws4" in auth):
            self.problems.append(f"a {service} request without its SigV4 signature")
        if service == "s3" and "x-amz-content-sha256" not in headers:
            self.problems.append("an S3 request without x-amz-content-sha256")

    def _s3(self, method: str, key: str, raw: bytes) -> tuple[int, Any] | None:
        if method == "PUT":
            self.objects[key] = raw
            return 200, b""
        if method == "GET" and key in self.objects:
            return 200, self.objects[key]
        return 404, b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"

    def _bedrock(self, method: str, rest: str, raw: bytes) -> tuple[int, Any] | None:
        if method == "POST" and rest == "":
            job = json.loads(raw)
            source = job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].removeprefix("s3://")
            if job.get("modelInvocationType") != "Converse" or not job.get("roleArn"):
                self.problems.append("a job that is not Converse, or without a role")
            if source not in self.objects:
                return 400, {"message": f"no input at {source}"}
            records = [json.loads(r) for r in self.objects[source].splitlines() if r.strip()]
            arn = f"{JOB_ARN_PREFIX}{uuid.uuid4().hex[:12]}"
            batch = Submitted("bedrock", arn, {r["recordId"]: r["modelInput"] for r in records})
            batch.output = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
            self._batches[arn] = batch
            self.requests.append(batch)
            return 200, {"jobArn": arn}
        match = re.fullmatch(r"/(arn:.+?/\w+)(/stop)?", rest)
        batch = self._batches.get(match[1]) if match else None
        if match is None or batch is None:
            return 404, {"message": "no such job"}
        if match[2]:
            self._cancel(batch)
            return 200, {}
        self._advance(batch)
        if batch.status in ("completed", "cancelled") and batch.output:
            self._bedrock_output(batch)
        status = _BEDROCK_STATUS[batch.status]
        return 200, {"jobArn": batch.id, "status": status, "modelId": "fake"}

    def _bedrock_output(self, batch: Submitted) -> None:
        """The output file Bedrock writes: ``{output}{job id}/input.jsonl.out``."""
        records = []
        for record_id, converse in batch.lines.items():
            text = _prompt(converse)
            record: dict[str, Any] = {"recordId": record_id, "modelInput": converse}
            if batch.status != "completed":
                continue  # a stopped job answered none here
            if "REFUSE" in text:
                record["error"] = {"errorCode": 400, "errorMessage": "refused"}
            else:
                words = len(text.split())
                record["modelOutput"] = {
                    "output": {
                        "message": {
                            "role": "assistant",
                            "content": [{"text": f"{self.name} says: {text}"}],
                        }
                    },
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": words, "outputTokens": words + 3},
                }
            records.append(record)
        key = f"{batch.output.removeprefix('s3://')}{batch.id.rsplit('/', 1)[1]}/input.jsonl.out"
        self.objects[key] = b"".join(json.dumps(r).encode() + b"\n" for r in records)

    # -- Anthropic --------------------------------------------------------------------------

    def _anthropic(self, method: str, rest: str, raw: bytes) -> tuple[int, Any] | None:
        if method == "POST" and rest == "":
            requests = json.loads(raw)["requests"]
            lines = {r["custom_id"]: r["params"] for r in requests}
            for params in lines.values():
                if not params.get("model") or not isinstance(params.get("max_tokens"), int):
                    self.problems.append("Message Batches params without model or max_tokens")
            batch = Submitted("anthropic", f"msgbatch_{uuid.uuid4().hex[:12]}", lines)
            self._batches[batch.id] = batch
            self.requests.append(batch)
            return 200, self._anthropic_object(batch)
        match = re.fullmatch(r"/([\w-]+)(/cancel|/results)?", rest)
        found = self._batches.get(match[1]) if match else None
        if match is None or found is None:
            return None
        batch = found
        if match[2] == "/cancel":
            self._cancel(batch)
        if match[2] == "/results":
            return 200, b"".join(
                json.dumps(r).encode() + b"\n" for r in self._anthropic_results(batch)
            )
        return 200, self._anthropic_object(batch)

    def _anthropic_object(self, batch: Submitted) -> dict[str, Any]:
        self._advance(batch)
        ended = batch.status != "in_progress"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended"
            if ended
            else ("canceling" if batch.cancelled else "in_progress"),
            "request_counts": {"processing": 0 if ended else len(batch.lines)},
            "cancel_initiated_at": "2026-01-01T00:00:00Z" if batch.cancelled else None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _anthropic_results(self, batch: Submitted) -> list[dict[str, Any]]:
        found = []
        for custom_id, params in batch.lines.items():
            text = _prompt(params)
            result: dict[str, Any]
            if batch.status in ("expired", "cancelled"):
                result = {"type": "expired" if batch.status == "expired" else "canceled"}
            elif "REFUSE" in text:
                error = {"type": "invalid_request_error", "message": "refused"}
                result = {"type": "errored", "error": {"type": "error", "error": error}}
            else:
                message = {
                    "id": f"msg_{custom_id}",
                    "type": "message",
                    "role": "assistant",
                    "model": params["model"],
                    "content": [{"type": "text", "text": f"{self.name} says: {text}"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": len(text.split()),
                        "output_tokens": 3 + len(text.split()),
                    },
                }
                result = {"type": "succeeded", "message": message}
            found.append({"custom_id": custom_id, "result": result})
        return found


def _prompt(body: dict[str, Any]) -> str:
    """The last user message's text of a chat body, Messages params or a Converse request."""
    user = [m for m in body["messages"] if m.get("role") == "user"]
    content = user[-1]["content"] if user else ""
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if p.get("type", "text") == "text")
    return str(content)
