"""Bedrock batch inference for a ``bedrock`` model: the lines written to S3 as one JSONL file
of ``{recordId, modelInput}`` records, one ``CreateModelInvocationJob``
(``POST {control}/model-invocation-job``, ``modelInvocationType: Converse``), its status read
with ``GetModelInvocationJob`` until it ends, then its output file read back from S3.

Converse, not InvokeModel: each ``modelInput`` is the Converse request the live call sends
(`gateway.providers.converse`, whatever the model's family), and each ``modelOutput`` the
Converse answer, translated into the ``chat.completion`` the live call returns. Where the
files go: ``{s3_uri}/{job name}/input.jsonl``; Bedrock writes its output under the output
prefix in a folder named by the job's id (the end of its ARN), as ``input.jsonl.out``. Record
ids are the lines' indexes, zero-padded to 11 digits as AWS's examples write them.

Every request is signed with SigV4 (`gateway.providers.aws.Signer`): the control plane as
service ``bedrock``, S3 as ``s3`` (path-style URLs, so a bucket name with dots works too).
Bedrock refuses a job under its per-model minimum of records (100 for most models): set the
model's ``batch_api.min_lines`` so, and a smaller group is called line by line instead.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import yarl

from gateway.batch.upstream.api import (
    LineFailed,
    Outcome,
    Result,
    json_object,
    read_jsonl,
    write_jsonl,
)
from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed, Reply
from gateway.providers import converse as wire
from gateway.providers.aws import Signer, raise_for_status
from gateway.providers.http import attempt

_ENDED = {
    "Completed": "completed",
    "PartiallyCompleted": "completed",
    "Failed": "failed",
    "Stopped": "cancelled",
    "Expired": "expired",
}
"""GetModelInvocationJob's final statuses (the others: Submitted, Validating, Scheduled,
InProgress, Stopping)."""
_INPUT = "input.jsonl"


class BedrockBatches:
    def __init__(self, config: ModelConfig) -> None:
        assert config.aws is not None and config.batch_api is not None  # validated
        options, region = config.batch_api, config.aws.region
        assert options.s3_uri is not None and options.role_arn is not None  # validated
        self._model, self._role = config.model, options.role_arn
        self._control = (options.control_url or f"https://bedrock.{region}.amazonaws.com").rstrip(
            "/"
        )
        s3 = (options.s3_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        bucket, _, prefix = options.s3_uri.removeprefix("s3://").partition("/")
        self._bucket, self._prefix = bucket, prefix.strip("/")
        self._objects = f"{s3}/{quote(bucket, safe='')}"
        self._bedrock, self._s3 = Signer(config.aws, "bedrock"), Signer(config.aws, "s3")
        t = config.timeouts
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s)
        )

    def request(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | LineFailed:
        tools = body.get("tools") or []
        try:
            names = wire.Names(tools)
            if any(wire.safe_name(sent) != sent for sent in names.original):
                raise AttemptFailed(
                    "status",
                    "HTTP 400: tool names of batch lines must match [a-zA-Z0-9_-]{1,64}",
                    status=400,
                )
            model_input = wire.request(body, names)
        except AttemptFailed as exc:
            error = (exc.body or {}).get("error") or {"message": exc.message}
            message = str(error.get("message", exc.message))
            body_out = {"error": {"message": message, "type": "invalid_request_error"}}
            return LineFailed(400, "invalid_request_error", message, body_out)
        return {"recordId": custom_id.zfill(11), "modelInput": model_input}

    async def submit(self, requests: list[dict[str, Any]]) -> str:
        name = f"gateway-{uuid.uuid4().hex[:16]}"
        folder = f"{self._prefix}/{name}" if self._prefix else name
        data = await write_jsonl(requests)
        await self._s3_call("PUT", f"{folder}/{_INPUT}", data)
        job = {
            "jobName": name,
            "modelId": self._model,
            "roleArn": self._role,
            "modelInvocationType": "Converse",
            "clientRequestToken": name,
            "inputDataConfig": {
                "s3InputDataConfig": {
                    "s3Uri": f"s3://{self._bucket}/{folder}/{_INPUT}",
                    "s3InputFormat": "JSONL",
                }
            },
            "outputDataConfig": {
                "s3OutputDataConfig": {"s3Uri": f"s3://{self._bucket}/{folder}/out/"}
            },
            "timeoutDurationInHours": 24,
        }
        created = await self._control_call("POST", "/model-invocation-job", job)
        return f"{created['jobArn']} {folder}"

    async def poll(self, upstream_id: str) -> Outcome | None:
        arn, folder = upstream_id.split(" ", 1)
        job = await self._control_call("GET", f"/model-invocation-job/{quote(arn, safe='')}")
        status = _ENDED.get(str(job.get("status")))
        if status is None:
            return None
        results: dict[str, Result] = {}
        if status != "failed":
            key = f"{folder}/out/{arn.rsplit('/', 1)[-1]}/{_INPUT}.out"
            try:
                raw = await self._s3_call("GET", key)
            except AttemptFailed as exc:
                if exc.status != 404:  # a stopped or expired job may have written none
                    raise
                raw = b""
            results.update(self._result(record) for record in await read_jsonl(raw))
        return Outcome(status, results)

    async def cancel(self, upstream_id: str) -> None:
        arn = upstream_id.split(" ", 1)[0]
        await self._control_call("POST", f"/model-invocation-job/{quote(arn, safe='')}/stop")

    def _result(self, record: dict[str, Any]) -> tuple[str, Result]:
        custom_id = str(int(str(record.get("recordId", "-1"))))
        output = record.get("modelOutput")
        if isinstance(output, dict):
            answer = wire.completion(
                output, self._model, f"chatcmpl-{uuid.uuid4().hex}", wire.Names([])
            )
            return custom_id, Reply(answer)
        error = record.get("error") or {}
        code = error.get("errorCode")
        status = code if isinstance(code, int) and 400 <= code < 600 else 502
        message = str(error.get("errorMessage") or "batch inference did not answer this record")
        kind = "invalid_request_error" if 400 <= status < 500 else "api_error"
        body = {"error": {"message": message, "type": kind}} if status < 500 else None
        return custom_id, LineFailed(status, kind, message, body)

    async def _control_call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = b"" if body is None else msgspec.json.encode(body)
        headers = {"content-type": "application/json"} if body is not None else {}
        raw = await self._send(self._bedrock, method, self._control + path, data, headers)
        return json_object(raw, f"Bedrock {method} {path}")

    async def _s3_call(self, method: str, key: str, data: bytes = b"") -> bytes:
        url = f"{self._objects}/{quote(key, safe='/')}"
        return await self._send(self._s3, method, url, data, {})

    async def _send(
        self, signer: Signer, method: str, url: str, data: bytes, headers: dict[str, str]
    ) -> bytes:
        signed = await signer.sign(url, data, headers, method)
        with attempt(f"{method} {url}"):
            async with self._session.request(
                method, yarl.URL(url, encoded=True), data=data or None, headers=signed
            ) as response:
                await raise_for_status(response)
                return await response.read()

    async def aclose(self) -> None:
        await self._session.close()
