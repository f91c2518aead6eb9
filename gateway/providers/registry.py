"""Which class speaks to a policy model's ``provider``: one line per remote provider.

The in-process ones (``local_engine``: the bundled engine, or the bundled embedder) load a
model when they start, so `gateway.runtime.store` starts those itself; every provider here is
built from its policy entry alone and opens connections as requests come.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.policy.models import ModelConfig
from gateway.providers import Provider
from gateway.providers.anthropic import Anthropic
from gateway.providers.azure_ml import AzureML
from gateway.providers.azure_openai import AzureOpenAI
from gateway.providers.bedrock import Bedrock
from gateway.providers.openai_compatible import OpenAICompatible
from gateway.providers.sagemaker import SageMaker
from gateway.providers.vertex import Vertex

REMOTE: dict[str, Callable[[ModelConfig], Provider]] = {
    "openai_compatible": OpenAICompatible,
    "azure_openai": AzureOpenAI,
    "azure_ml": AzureML,
    "anthropic": Anthropic,
    "vertex": Vertex,
    "bedrock": Bedrock,
    "sagemaker": SageMaker,
}
