"""Amazon Bedrock through its Converse and ConverseStream APIs (``provider: bedrock``).

``POST {base}/model/{modelId}/converse`` and ``/converse-stream``, signed with SigV4 for the
service ``bedrock``; the base is ``https://bedrock-runtime.{region}.amazonaws.com`` unless the
policy's ``base_url`` says otherwise. The model id (or an inference profile's ARN, with its
``:`` and ``/``) is one path segment, percent-encoded whole. Translation lives in
`gateway.providers.converse`; transport, signing and errors in `gateway.providers.aws`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import msgspec

from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed, Embedded, Reply, unsupported
from gateway.providers import converse as wire
from gateway.providers.aws import AwsTransport

_ACCEPT_STREAM = {"accept": "application/vnd.amazon.eventstream"}


class Bedrock:
    def __init__(self, config: ModelConfig) -> None:
        assert config.aws is not None  # the policy's validation guarantees it
        host = f"bedrock-runtime.{config.aws.region}.amazonaws.com"
        self._transport = AwsTransport(config, "bedrock", host)
        self._model = config.model
        self._path = model_path(config.model)

    async def complete(self, body: dict[str, Any]) -> Reply:
        names, payload = _converse(body)
        raw = await self._transport.post(self._path + "/converse", payload, {})
        try:
            answer = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise AttemptFailed("protocol", f"unreadable Converse answer: {exc}") from exc
        if not isinstance(answer, dict):
            raise AttemptFailed("protocol", "the Converse answer is not a JSON object")
        return Reply(wire.completion(answer, self._model, _answer_id(), names))

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        names, payload = _converse(body)
        translator = wire.StreamTranslator(self._model, _answer_id(), names)
        path = self._path + "/converse-stream"
        async for messages in self._transport.events(path, payload, _ACCEPT_STREAM):
            batch = []
            for message in messages:
                event = _payload(message.payload)
                chunk = translator.event(str(message.headers.get(":event-type", "")), event)
                if chunk is not None:
                    batch.append(chunk)
            if batch:
                yield batch
        if not translator.stopped:
            raise AttemptFailed("protocol", "the stream ended before messageStop")

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    async def aclose(self) -> None:
        await self._transport.aclose()


def model_path(model: str) -> str:
    """``/model/{modelId}``, the id percent-encoded whole (an ARN's ``:`` and ``/`` too), so it
    stays one path segment; the signer encodes it once more, as AWS does (PITFALLS 3.4)."""
    return f"/model/{quote(model, safe='')}"


def _converse(body: dict[str, Any]) -> tuple[wire.Names, bytes]:
    """The request's tool names, and its Converse request's bytes: what gets signed."""
    names = wire.Names(body.get("tools") or [])
    return names, msgspec.json.encode(wire.request(body, names))


def _answer_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _payload(raw: bytes) -> dict[str, Any]:
    try:
        event = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise AttemptFailed("protocol", f"unreadable ConverseStream event: {exc}") from exc
    if not isinstance(event, dict):
        raise AttemptFailed("protocol", "a ConverseStream event is not a JSON object")
    return event
