"""The exact cache: a request identical in every field that changes its answer gets the
stored answer.

The key hashes an explicit list of request fields (`KEY_FIELDS`) with the tenant, the model
choice (a named model, or ``auto`` with the policy's version, since a new policy may route
differently) and the policy's cache namespace. Every field of the OpenAI API is classified as
key or non-key; a field the gateway does not know is part of the key, so an unknown parameter
can only cause a miss, never a wrong hit.

Entries live in :mod:`gateway.exact_store`: Redis or an in-process LRU. A store that fails or
is slow is bypassed: the request goes upstream with ``x-gateway-cache: bypass``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.exact_store import Store, StoreDown, tenant_part
from gateway.pipeline import cached_answer
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.normalize import CacheControl, ChatRequest
from gateway.pipeline.turn import CacheOutcome, Turn
from gateway.runtime.store import Runtime

log = logging.getLogger(__name__)

KEY_FIELDS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "verbosity",
        "web_search_options",
    }
)
"""Fields that change the answer. ``model`` is keyed separately, as the model choice."""
NON_KEY_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
    }
)
"""Fields that change delivery, billing or provider-side bookkeeping, not the answer."""


def cacheable(body: Mapping[str, Any], max_temperature: float) -> bool:
    """Whether the request may be answered from, or stored in, a cache at all.

    Several choices and log-probabilities are not kept by the canonical form; a temperature
    above the policy's maximum asks for variety, which a cache would take away. A missing
    temperature is the provider's default, 1.
    """
    temperature = body.get("temperature")
    return (
        body.get("n") in (None, 1)
        and not body.get("logprobs")
        and (1.0 if temperature is None else float(temperature)) <= max_temperature
    )


def key(
    request: ChatRequest,
    namespace: str,
    policy_version: str,
    routing_tags: frozenset[str] = frozenset(),
) -> str:
    """The entry's key. Tags that routing rules test are part of it, since they pick the model."""
    model = f"auto@{policy_version}" if request.model == "auto" else request.model
    fields = {k: v for k, v in request.body.items() if k not in NON_KEY_FIELDS}
    tags = {k: v for k, v in request.tags.items() if k in routing_tags}
    digest = hashlib.sha256(msgspec.json.encode([namespace, model, tags, fields], order="sorted"))
    return f"{tenant_part(request.tenant)}:{digest.hexdigest()}"


async def lookup(turn: Turn) -> CachedAnswer | None:
    """The stored answer to this exact request, if any; sets ``turn.cache``."""
    with turn.trace.stage("exact_cache") as span:
        turn.cache, answer = await _lookup(turn.request, turn.runtime, turn.services.exact)
        span.set_attribute("gateway.cache", turn.cache)
    return answer


async def save(turn: Turn, answer: CachedAnswer) -> None:
    """Store a complete answer (after the response)."""
    request, config = turn.request, turn.runtime.policy.cache.exact
    if (
        not config.enabled
        or not request.cache_control.write
        or not cacheable(request.body, config.max_temperature)
    ):
        return
    with contextlib.suppress(StoreDown):
        await turn.services.exact.set(
            _key(request, turn.runtime), cached_answer.encode(answer), config.ttl
        )


async def _lookup(
    request: ChatRequest, runtime: Runtime, store: Store
) -> tuple[CacheOutcome, CachedAnswer | None]:
    config, control = runtime.policy.cache.exact, request.cache_control
    if (
        not config.enabled
        or not control.read
        or not cacheable(request.body, config.max_temperature)
    ):
        return "bypass", None
    entry_key = _key(request, runtime)
    try:
        raw = await store.get(entry_key)
    except StoreDown:
        return "bypass", None
    if raw is None:
        return "miss", None
    try:
        answer = cached_answer.decode(raw)
    except msgspec.MsgspecError:
        log.warning("exact cache: deleting an undecodable entry")
        with contextlib.suppress(StoreDown):
            await store.delete(entry_key)
        return "miss", None
    if not _fresh(answer, control, config.ttl):
        return "miss", None
    return "exact", answer


def _key(request: ChatRequest, runtime: Runtime) -> str:
    return key(request, runtime.policy.cache.namespace, runtime.loaded.digest, runtime.routing_tags)


def _fresh(answer: CachedAnswer, control: CacheControl, ttl_s: float) -> bool:
    age = time.time() - answer.created
    return age <= ttl_s and (control.max_age is None or age <= control.max_age)
