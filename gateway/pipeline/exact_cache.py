"""The exact cache: a request identical in every field that changes its answer gets the
stored answer.

The key hashes an explicit list of request fields (`KEY_FIELDS`) with the tenant, the model
choice (a named model, or ``auto`` with the policy's version, since a new policy may route
differently) and the policy's cache namespace. Every field of the OpenAI API is classified as
key or non-key; a field the gateway does not know is part of the key, so an unknown parameter
can only cause a miss, never a wrong hit.

With ``cache.semantic.scope: user`` the end user (``ChatRequest.end_user``) is part of the key
too, and a request that names none uses no cache (:func:`unscoped`): per-user scope is one
setting for both caches, since a deployment that must keep users apart keeps them apart in both.

An embeddings request is cached per input (`vector_keys`): each input's vector under a key of
the tenant, the chosen embeddings model, the fields that change vectors (``dimensions``...) and
the input itself, whatever encoding the client asked for.

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


EMBEDDINGS_NON_KEY_FIELDS = frozenset({"model", "input", "encoding_format", "user"})
"""Embeddings fields that change no vector: the chosen model is keyed on its own, each input
keys its own entry, and the encoding is applied on the way out. Every other field (dimensions,
a provider's own such as input_type) keys the entries."""


class CachedVector(msgspec.Struct, frozen=True):
    """One input's embedding, as cached."""

    upstream_model: str
    """The ``model`` the provider put in its response."""
    tokens: int
    """The input's tokens (its share of the batch's, when the provider counted only those)."""
    vector: bytes
    """Little-endian float32."""
    created: float


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
    user: str | None = None,
) -> str:
    """The entry's key. Tags that routing rules test are part of it, since they pick the model;
    so is ``user``, the end user, when the cache is scoped per user."""
    model = f"auto@{policy_version}" if request.model == "auto" else request.model
    fields = {k: v for k, v in request.body.items() if k not in NON_KEY_FIELDS}
    tags = {k: v for k, v in request.tags.items() if k in routing_tags}
    scope = [namespace, model, tags, fields] + ([] if user is None else [user])
    digest = hashlib.sha256(msgspec.json.encode(scope, order="sorted"))
    return f"{tenant_part(request.tenant)}:{digest.hexdigest()}"


def unscoped(request: ChatRequest, runtime: Runtime) -> bool:
    """Whether the caches are scoped per user (``cache.semantic.scope: user``) and the request
    names no end user: it then neither reads nor writes a cache, so that an anonymous request
    can neither be served another's answer nor plant one for others."""
    return runtime.policy.cache.semantic.scope == "user" and request.end_user is None


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
        or unscoped(request, turn.runtime)
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
        or unscoped(request, runtime)
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
    if not _fresh(answer.created, control, config.ttl):
        return "miss", None
    return "exact", answer


def vector_keys(request: ChatRequest, model: str, namespace: str) -> list[str]:
    """One key per input of an embeddings request, for the policy model that embeds it, so a
    batch with one new input needs the model for that input alone."""
    fields = {k: v for k, v in request.body.items() if k not in EMBEDDINGS_NON_KEY_FIELDS}
    scope = [request.tenant, namespace, "embeddings", model, fields]
    base = hashlib.sha256(msgspec.json.encode(scope, order="sorted") + b"\0")
    prefix = tenant_part(request.tenant)
    keys = []
    for item in request.body["input"]:
        digest = base.copy()
        digest.update(msgspec.json.encode(item))
        keys.append(f"{prefix}:{digest.hexdigest()}")
    return keys


async def lookup_vectors(turn: Turn, keys: list[str]) -> list[CachedVector | None]:
    """The cached embedding of each input (None for a miss); sets ``turn.cache``: ``exact``
    only when every input was found, else ``miss`` (or ``bypass``)."""
    with turn.trace.stage("exact_cache") as span:
        found = await _lookup_vectors(turn, keys)
        span.set_attribute("gateway.cache", turn.cache)
    return found


async def _lookup_vectors(turn: Turn, keys: list[str]) -> list[CachedVector | None]:
    config, control = turn.runtime.policy.cache.exact, turn.request.cache_control
    misses: list[CachedVector | None] = [None] * len(keys)
    if not config.enabled or not control.read:
        turn.cache = "bypass"
        return misses
    try:
        raws = await turn.services.exact.get_many(keys)
    except StoreDown:
        turn.cache = "bypass"
        return misses
    found = [_vector(raw, control, config.ttl) for raw in raws]
    turn.cache = "exact" if all(v is not None for v in found) else "miss"
    return found


def _vector(raw: bytes | None, control: CacheControl, ttl_s: float) -> CachedVector | None:
    if raw is None:
        return None
    try:
        entry = msgspec.msgpack.decode(raw, type=CachedVector)
    except msgspec.MsgspecError:
        return None  # overwritten by the fresh answer
    return entry if _fresh(entry.created, control, ttl_s) else None


async def save_vectors(turn: Turn, entries: list[tuple[str, CachedVector]]) -> None:
    """Store new embeddings under their keys (after the response)."""
    config = turn.runtime.policy.cache.exact
    if not config.enabled or not turn.request.cache_control.write or not entries:
        return
    encoded = [(key, msgspec.msgpack.encode(entry)) for key, entry in entries]
    with contextlib.suppress(StoreDown):
        await turn.services.exact.set_many(encoded, config.ttl)


def _key(request: ChatRequest, runtime: Runtime) -> str:
    user = request.end_user if runtime.policy.cache.semantic.scope == "user" else None
    return key(
        request, runtime.policy.cache.namespace, runtime.loaded.digest, runtime.routing_tags, user
    )


def _fresh(created: float, control: CacheControl, ttl_s: float) -> bool:
    age = time.time() - created
    return age <= ttl_s and (control.max_age is None or age <= control.max_age)
