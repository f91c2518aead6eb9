"""OpenAI's Batch API for an ``openai_compatible`` model: the lines uploaded as one JSONL file
(``POST {base_url}/files``, purpose ``batch``), one ``POST {base_url}/batches`` for
``/v1/chat/completions`` in the ``24h`` window, ``GET {base_url}/batches/{id}`` until it ends,
then the output and error files' content (``GET {base_url}/files/{id}/content``).

Each line's body is the one the live call would send (the policy's model name in it), so its
answer is the same ``chat.completion`` a live call returns.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from gateway.batch.upstream.api import (
    FINAL_STATUSES,
    JsonClient,
    LineFailed,
    Outcome,
    Result,
    read_jsonl,
    write_jsonl,
)
from gateway.policy.models import ModelConfig
from gateway.providers import Reply

ENDPOINT = "/v1/chat/completions"


class OpenAIBatches:
    def __init__(self, config: ModelConfig) -> None:
        assert config.base_url is not None  # the policy's validation guarantees it
        self._base = config.base_url.rstrip("/")
        self._model = config.model
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = JsonClient(config, headers)

    def request(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | LineFailed:
        line_body = {**body, "model": self._model}
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": line_body}

    async def submit(self, requests: list[dict[str, Any]]) -> str:
        data = await write_jsonl(requests)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="batch.jsonl", content_type="application/jsonl")
        uploaded = await self._http.json("POST", f"{self._base}/files", data=form)
        created = await self._http.json(
            "POST",
            f"{self._base}/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": ENDPOINT,
                "completion_window": "24h",
            },
        )
        return str(created["id"])

    async def poll(self, upstream_id: str) -> Outcome | None:
        batch = await self._http.json("GET", f"{self._base}/batches/{upstream_id}")
        status = batch.get("status")
        if status not in FINAL_STATUSES:
            return None
        results: dict[str, Result] = {}
        for key in ("output_file_id", "error_file_id"):
            if file_id := batch.get(key):
                raw = await self._http.read("GET", f"{self._base}/files/{file_id}/content")
                results.update(_result(line) for line in await read_jsonl(raw))
        return Outcome(str(status), results)

    async def cancel(self, upstream_id: str) -> None:
        await self._http.json("POST", f"{self._base}/batches/{upstream_id}/cancel")

    async def aclose(self) -> None:
        await self._http.aclose()


def _result(line: dict[str, Any]) -> tuple[str, Result]:
    """A line of the output or error file: ``response`` with its status and body, or an
    ``error`` (``batch_expired``...) with no response."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    status, body = response.get("status_code"), response.get("body")
    if isinstance(status, int) and 200 <= status < 300 and isinstance(body, dict):
        return custom_id, Reply(msgspec.json.encode(body))
    error = line.get("error") or (body or {}).get("error") or {}
    code = str(error.get("code") or error.get("type") or "upstream_error")
    message = str(error.get("message") or "the upstream batch did not answer this line")
    if isinstance(status, int):
        return custom_id, LineFailed(
            status, code, message, body if isinstance(body, dict) else None
        )
    return custom_id, LineFailed(502, code, message)
