"""What the spans say: the OpenTelemetry GenAI semantic conventions' attributes, and ours.

The root span is the HTTP server span of ``POST /v1/chat/completions``; it carries the
request's ``gen_ai.request.*`` (`request_attributes`, once the body is parsed) and, at its end,
the answer's ``gen_ai.response.model`` and ``gen_ai.usage.*`` from the ledger record
(`record_attributes`). An upstream attempt is a GenAI "inference" span (kind CLIENT, named
``{gen_ai.operation.name} {gen_ai.request.model}``: `attempt_name`, `attempt_attributes`).
Names of the gateway's own that the conventions lack are under ``gateway.``.

This module changes when the conventions (or what we report) change; `tracing` decides which
span gets what, and when.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from gateway.ledger.record import LedgerRecord
    from gateway.pipeline.normalize import ChatRequest
    from gateway.policy.schema import ModelConfig

ROOT_SPAN = "POST /v1/chat/completions"
OPERATION = "chat"
_FLOAT_PARAMS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)
_PROVIDERS = {
    "api.openai.com": "openai",
    "openai.azure.com": "azure.ai.openai",
    "api.anthropic.com": "anthropic",
    "api.mistral.ai": "mistral_ai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "generativelanguage.googleapis.com": "gcp.gemini",
}


def root_attributes(request_id: str) -> dict[str, AttributeValue]:
    """The request span's attributes known on arrival (a fresh dict: the span keeps it)."""
    return {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "gen_ai.operation.name": OPERATION,
        "gateway.request_id": request_id,
    }


def request_attributes(request: ChatRequest) -> dict[str, AttributeValue]:
    """The parsed request's model and sampling parameters (those it sets)."""
    body = request.body
    attributes: dict[str, AttributeValue] = {
        "gen_ai.request.model": request.model,
        "gen_ai.request.stream": request.stream,
        "gateway.tenant": request.tenant,
    }
    for key, name in _FLOAT_PARAMS:
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = float(value)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes["gen_ai.request.max_tokens"] = max_tokens
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        attributes["gen_ai.request.seed"] = seed
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    return attributes


def attempt_name(config: ModelConfig) -> str:
    return f"{OPERATION} {config.model}"


def attempt_attributes(model: str, config: ModelConfig, number: int) -> dict[str, AttributeValue]:
    """An upstream attempt on policy model ``model`` (``config``: its policy entry)."""
    address, port, provider = _server(config.base_url, config.provider)
    return {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": config.model,
        "server.address": address,
        "server.port": port,
        "gateway.model": model,
        "gateway.attempt": number,
    }


def record_attributes(record: LedgerRecord) -> dict[str, AttributeValue]:
    """The answer, from the request's ledger record: model, usage, cost, cache, route."""
    attributes: dict[str, AttributeValue] = {
        "gateway.tenant": record.tenant,
        "gateway.cache": record.cache,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
    }
    if record.model is not None:
        attributes["gen_ai.response.model"] = record.model
        attributes["gateway.model"] = record.model
    if record.route is not None:
        attributes["gateway.route"] = record.route
    if record.cached_input_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = record.cached_input_tokens
    if record.cost_usd is not None:
        attributes["gateway.cost_usd"] = float(record.cost_usd)
    if record.baseline_cost_usd is not None:
        attributes["gateway.baseline_cost_usd"] = float(record.baseline_cost_usd)
    if record.difficulty is not None:
        attributes["gateway.difficulty"] = record.difficulty
    if record.ttft_ms is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = record.ttft_ms / 1000
    if record.estimated:
        attributes["gateway.usage_estimated"] = True
    return attributes


def error_type(exc: BaseException) -> str:
    """``error.type``: a low-cardinality name for a failure (the upstream's status, its
    kind, or the class); also the outcome label of ``gateway_upstream_attempts_total``."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return str(status)
    for name in ("kind", "code"):  # AttemptFailed.kind, GatewayError.code
        value = getattr(exc, name, None)
        if isinstance(value, str):
            return value
    if type(exc).__name__ == "CancelledError":
        return "cancelled"
    return type(exc).__name__


@lru_cache(maxsize=256)
def _server(base_url: str, provider: str) -> tuple[str, int, str]:
    """``server.address``, ``server.port`` and ``gen_ai.provider.name`` of a base URL."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    name = next((v for k, v in _PROVIDERS.items() if host == k or host.endswith("." + k)), None)
    return host, port, name or provider
