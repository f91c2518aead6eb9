"""A model deployed behind an Amazon SageMaker endpoint (``provider: sagemaker``).

``POST {base}/endpoints/{endpoint}/invocations`` (InvokeEndpoint) and
``/invocations-response-stream`` (InvokeEndpointWithResponseStream), signed with SigV4 for the
service ``sagemaker``; the base is ``https://runtime.sagemaker.{region}.amazonaws.com`` unless
the policy's ``base_url`` says otherwise, and the endpoint is the policy model's ``model``.
``aws.inference_component`` goes out as ``X-Amzn-SageMaker-Inference-Component`` on both
paths (the streaming one too, PITFALLS 3.12).

``container.format``:

- ``openai``: the container speaks Chat Completions (vLLM, TGI's Messages API, LMI): the body
  passes through (without ``model``: the endpoint names the model) and the answer comes back as
  it is; a stream's ``PayloadPart`` frames carry the container's SSE bytes, cut anywhere, and
  are read as one byte stream (`gateway.providers.sse.DataLines`) up to ``data: [DONE]``.
- ``tgi``: TGI's generate API, translated by `gateway.providers.tgi` (a documented prompt
  template; tools, images and the like refused with a 400 naming the field). Its stream has no
  ``[DONE]``: it ends with the line that carries ``details``.

Containers that stream bare JSON lines rather than SSE ``data:`` lines are not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import msgspec

from gateway.policy.models import ContainerOptions, ModelConfig
from gateway.providers import AttemptFailed, Embedded, Reply, unsupported
from gateway.providers.aws import AwsTransport
from gateway.providers.sse import DataLines
from gateway.providers.tgi import TgiStream, completion_from_tgi, tgi_request

COMPONENT_HEADER = "x-amzn-sagemaker-inference-component"


class SageMaker:
    def __init__(self, config: ModelConfig) -> None:
        assert config.aws is not None  # the policy's validation guarantees it
        host = f"runtime.sagemaker.{config.aws.region}.amazonaws.com"
        self._transport = AwsTransport(config, "sagemaker", host)
        self._model = config.model
        self._path = f"/endpoints/{quote(config.model, safe='')}"
        self._tgi = (config.container or ContainerOptions()).format == "tgi"
        component = config.aws.inference_component
        self._headers = {COMPONENT_HEADER: component} if component else {}

    def _payload(self, body: dict[str, Any]) -> bytes:
        if self._tgi:
            return msgspec.json.encode(tgi_request(body))
        return msgspec.json.encode({k: v for k, v in body.items() if k != "model"})

    async def complete(self, body: dict[str, Any]) -> Reply:
        payload = self._payload(body)
        raw = await self._transport.post(self._path + "/invocations", payload, self._headers)
        if self._tgi:
            return Reply(msgspec.json.encode(completion_from_tgi(raw, self._model)))
        return Reply(raw)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        payload = self._payload(body)
        path = self._path + "/invocations-response-stream"
        events = self._transport.events(path, payload, self._headers)
        lines = DataLines()
        tgi = TgiStream(self._model) if self._tgi else None
        async with contextlib.aclosing(events):
            async for messages in events:
                batch = []
                for message in messages:
                    if message.headers.get(":event-type") != "PayloadPart":
                        continue
                    found = lines.feed(message.payload)
                    batch += [c for p in found for c in tgi.feed(p)] if tgi else found
                if batch:
                    yield batch
                if lines.done or (tgi is not None and tgi.done):
                    return
        end = "its last TGI line" if tgi else "data: [DONE]"
        raise AttemptFailed("protocol", f"the stream ended without {end}")

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    async def aclose(self) -> None:
        await self._transport.aclose()
