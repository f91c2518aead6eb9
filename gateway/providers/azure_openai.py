"""Azure OpenAI: OpenAI's wire format at Azure's URLs, with Azure's auth and stream quirks.

The HTTP exchange, timeouts, error mapping (JSON error bodies, Retry-After) and SSE reading are
`OpenAICompatible`'s; this subclass changes only where requests go, how they are authorized,
and what Azure adds to a stream.

URLs (`urls`), from the policy's ``base_url``, the resource endpoint
(``https://<resource>.openai.azure.com``; a trailing ``/``, ``/openai`` or ``/openai/v1`` is
taken too):

- ``azure.api_version`` set: the deployment URL,
  ``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}``
  (``/embeddings`` for ``kind: embeddings``), where the deployment is ``azure.deployment``, or
  the policy's ``model`` when that is unset;
- unset: the v1 API, ``{endpoint}/openai/v1/chat/completions`` (or ``/embeddings``), no
  api-version; the request's ``model`` names the deployment: ``azure.deployment`` if set, else
  the policy's ``model``.

Auth: ``azure.auth: api_key`` sends the policy's ``api_key`` as the ``api-key`` header;
``entra_id`` a Microsoft Entra ID token for ``https://cognitiveservices.azure.com/.default``
(`azure_auth`).

Streams and the rest: `gateway.providers.azure.AzureProvider`.
"""

from __future__ import annotations

from gateway.policy.models import AzureOptions
from gateway.policy.schema import ModelConfig
from gateway.providers.azure import AzureProvider


def urls(base_url: str, azure: AzureOptions, model: str) -> tuple[str, str]:
    """The chat completions and embeddings URLs of a deployment (see the module's docstring)."""
    endpoint = base_url.rstrip("/").removesuffix("/openai/v1").removesuffix("/openai")
    if azure.api_version is None:
        root, query = f"{endpoint}/openai/v1", ""
    else:
        root = f"{endpoint}/openai/deployments/{azure.deployment or model}"
        query = f"?api-version={azure.api_version}"
    return f"{root}/chat/completions{query}", f"{root}/embeddings{query}"


class AzureOpenAI(AzureProvider):
    scope = "https://cognitiveservices.azure.com/.default"

    @staticmethod
    def _session_config(config: ModelConfig, azure: AzureOptions) -> ModelConfig:
        headers = dict(config.headers)
        if azure.auth == "api_key" and config.api_key:
            headers["api-key"] = config.api_key  # not as OpenAI's bearer header
        model = (azure.deployment or config.model) if azure.api_version is None else config.model
        return config.model_copy(update={"api_key": None, "headers": headers, "model": model})

    @staticmethod
    def _urls(base_url: str, config: ModelConfig, azure: AzureOptions) -> tuple[str, str]:
        return urls(base_url, azure, config.model)
