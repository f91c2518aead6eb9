"""Anthropic's Message Batches for an ``anthropic`` model: one
``POST {base_url}/v1/messages/batches`` with ``requests: [{custom_id, params}]`` (each
``params`` the Messages body the live call would send, translated by
`gateway.wire.anthropic_upstream`), ``GET .../{id}`` until ``processing_status`` is
``ended``, then its ``results_url`` (JSONL), each Message translated back into the
``chat.completion`` the live call returns.

A line Messages cannot take fails alone, as the live call's 400 would, and is not sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.batch.upstream.api import (
    JsonClient,
    LineFailed,
    Outcome,
    Result,
    read_jsonl,
)
from gateway.policy.models import ModelConfig
from gateway.providers import Reply
from gateway.providers.anthropic import API_VERSION, DEFAULT_BASE_URL
from gateway.wire.anthropic_upstream import ERROR_STATUS, Unsupported, completion, messages_body

_LINE_ENDS = {"canceled": "batch_cancelled", "expired": "batch_expired"}


class AnthropicBatches:
    def __init__(self, config: ModelConfig) -> None:
        self._url = (config.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages/batches"
        self._model = config.model
        headers = {"x-api-key": config.api_key or "", "anthropic-version": API_VERSION}
        self._http = JsonClient(config, headers)

    def request(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | LineFailed:
        try:
            params = messages_body(body)
        except Unsupported as exc:
            error = {"message": str(exc), "type": "invalid_request_error"}
            return LineFailed(400, "invalid_request_error", str(exc), {"error": error})
        params.pop("stream", None)
        return {"custom_id": custom_id, "params": {"model": self._model, **params}}

    async def submit(self, requests: list[dict[str, Any]]) -> str:
        created = await self._http.json("POST", self._url, json={"requests": requests})
        return str(created["id"])

    async def poll(self, upstream_id: str) -> Outcome | None:
        batch = await self._http.json("GET", f"{self._url}/{upstream_id}")
        if batch.get("processing_status") != "ended":
            return None
        results: dict[str, Result] = {}
        if url := batch.get("results_url"):
            raw = await self._http.read("GET", url)
            results.update(_result(line) for line in await read_jsonl(raw))
        status = "cancelled" if batch.get("cancel_initiated_at") else "completed"
        return Outcome(status, results)

    async def cancel(self, upstream_id: str) -> None:
        await self._http.json("POST", f"{self._url}/{upstream_id}/cancel")

    async def aclose(self) -> None:
        await self._http.aclose()


def _result(line: dict[str, Any]) -> tuple[str, Result]:
    """A results line: ``succeeded`` with its Message, ``errored`` with Anthropic's error
    object, or ``canceled`` / ``expired`` (not run)."""
    custom_id, result = str(line.get("custom_id")), line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        return custom_id, Reply(msgspec.json.encode(completion(result["message"])))
    if kind in _LINE_ENDS:
        code = _LINE_ENDS[kind]
        return custom_id, LineFailed(502, code, f"The upstream batch {kind} this line.")
    error = (result.get("error") or {}).get("error") or {}
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or "the upstream batch did not answer this line")
    status = ERROR_STATUS.get(error_type, 500)
    return custom_id, LineFailed(status, error_type, message, {"error": error})
