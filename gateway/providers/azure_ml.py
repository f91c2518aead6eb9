"""Azure ML: a model deployed behind an Azure Machine Learning online endpoint, or a serverless
(models-as-a-service) endpoint.

The policy's ``base_url`` is the scoring URI, used as it is:
``https://<endpoint>.<region>.inference.ml.azure.com/score`` for an online endpoint, or a
serverless endpoint's ``.../v1/chat/completions``. ``azure.deployment``, when set, is sent as
the ``azureml-model-deployment`` header, which pins a request to one deployment of the endpoint
(otherwise the endpoint's traffic split chooses).

Auth: ``azure.auth: api_key`` sends the policy's ``api_key`` (the endpoint's key) as
``Authorization: Bearer``; ``entra_id`` a Microsoft Entra ID token for
``https://ml.azure.com/.default`` (`azure_auth`).

``container.format``:

- ``openai`` (the default): the container speaks Chat Completions (vLLM, TGI's Messages API,
  a serverless model); the body passes through and the answer comes back as it is, its stream
  cleared of Azure's content-filter quirks as Azure OpenAI's is
  (`gateway.providers.azure.without_filter_quirks`);
- ``tgi``: TGI's generate API (`gateway.providers.tgi`): the body is translated to
  ``{"inputs", "parameters", "stream"}``, the answer and the stream's lines back to chat.

The HTTP exchange, timeouts and error mapping are `OpenAICompatible`'s, the auth
`AzureProvider`'s: this class sets the URL and the headers, the payload (``_payload``) and what
the answers are read as. It answers no embeddings (the policy refuses ``kind: embeddings``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from gateway.policy.models import AzureOptions, ContainerOptions
from gateway.policy.schema import ModelConfig
from gateway.providers import Embedded, Reply, unsupported
from gateway.providers.azure import AzureProvider
from gateway.providers.azure_auth import Batches
from gateway.providers.tgi import TgiStream, completion_from_tgi, tgi_request

DEPLOYMENT_HEADER = "azureml-model-deployment"


class AzureML(AzureProvider):
    scope = "https://ml.azure.com/.default"

    @staticmethod
    def _session_config(config: ModelConfig, azure: AzureOptions) -> ModelConfig:
        headers = dict(config.headers)
        if azure.deployment:
            headers[DEPLOYMENT_HEADER] = azure.deployment
        key = config.api_key if azure.auth == "api_key" else None  # sent as a bearer key
        return config.model_copy(update={"api_key": key, "headers": headers})

    @staticmethod
    def _urls(base_url: str, config: ModelConfig, azure: AzureOptions) -> tuple[str, str]:
        return base_url, base_url  # the scoring URI; embeddings are never sent

    @property
    def _tgi(self) -> bool:
        return (self._config.container or ContainerOptions()).format == "tgi"

    def _payload(self, body: dict[str, Any]) -> bytes:
        if self._tgi:
            return msgspec.json.encode(tgi_request(body))
        return super()._payload(body)

    async def complete(self, body: dict[str, Any]) -> Reply:
        reply = await super().complete(body)
        if self._tgi:
            return Reply(msgspec.json.encode(completion_from_tgi(reply.body, self._config.model)))
        return reply

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    def stream(self, body: dict[str, Any]) -> Batches:
        if self._tgi:
            return tgi_batches(self._raw_stream(body), self._config.model)
        return super().stream(body)


async def tgi_batches(batches: Batches, model: str) -> Batches:
    """A TGI stream's lines as chat chunk batches, to the line with ``details`` (TGI sends no
    ``[DONE]``); closing it closes ``batches``."""
    tgi = TgiStream(model)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if chunks := [chunk for line in batch for chunk in tgi.feed(line)]:
                yield chunks
            if tgi.done:
                return
