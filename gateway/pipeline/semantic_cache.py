"""The semantic-cache stage: which requests may use it, and in which scope.

:mod:`gateway.semantic` does the search, the meaning guard and the Redis sharing; this stage
decides what the pipeline asks of it. A request takes part when the policy enables the cache,
its text is not empty, and it is cacheable under the semantic cache's own (lower) temperature
limit. ``Cache-Control`` applies as for the exact cache.

Scope: entries are searched per tenant and per *scope*, a hash of the policy's cache namespace,
the model choice (a named model, or ``auto`` with the policy version, since a new policy may
route differently), the routing tags and the request's context fingerprint (system prompt,
earlier turns, tools, output-shaping parameters). An answer is therefore only ever offered to
the same tenant, asking in the same context, under the same routing.

The cache itself is :class:`gateway.semantic.lazy.LazySemanticCache`, opened once; the
threshold, the temperature limit and ``enabled`` are read here, per request.
"""

from __future__ import annotations

import hashlib
import logging

import msgspec

from gateway.pipeline import cached_answer
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.exact_cache import cacheable
from gateway.pipeline.turn import Turn
from gateway.semantic import DEFAULT_THRESHOLD, context_fingerprint

log = logging.getLogger(__name__)


def wanted(turn: Turn) -> bool:
    """Whether the request reads or writes the semantic cache at all."""
    config = turn.runtime.policy.cache.semantic
    control = turn.request.cache_control
    return (
        config.enabled
        and (control.read or control.write)
        and cacheable(turn.request.body, config.max_temperature)
    )


async def lookup(turn: Turn) -> CachedAnswer | None:
    """An answer to a question that means the same in the same scope; sets ``turn.cache`` (and
    ``turn.cache_score`` on a hit) when the cache was asked."""
    understanding = turn.understanding
    if understanding is None or not turn.request.cache_control.read or not wanted(turn):
        return None
    with turn.trace.stage("semantic_cache") as span:
        answer = await _lookup(turn) if understanding.text else None
        if answer is not None:
            turn.cache = "semantic"
        elif turn.cache != "bypass" or not turn.services.semantic.degraded():
            turn.cache = "miss"  # ``bypass`` stays only while a store is down
        span.set_attribute("gateway.cache", turn.cache)
    return answer


async def save(turn: Turn, answer: CachedAnswer) -> None:
    """Store a complete answer (after the response)."""
    config, understanding = turn.runtime.policy.cache.semantic, turn.understanding
    if not (
        understanding is not None
        and understanding.text
        and wanted(turn)
        and turn.request.cache_control.write
    ):
        return
    cache = await turn.services.semantic.get(config)
    await cache.store(
        turn.request.tenant,
        _scope(turn),
        understanding.vector,
        understanding.text,
        cached_answer.encode(answer),
    )


async def _lookup(turn: Turn) -> CachedAnswer | None:
    config, request, understanding = (
        turn.runtime.policy.cache.semantic,
        turn.request,
        turn.understanding,
    )
    assert understanding is not None  # the caller checked
    cache = await turn.services.semantic.get(config)
    max_age = request.cache_control.max_age
    hit = await cache.lookup(
        request.tenant,
        _scope(turn),
        understanding.vector,
        understanding.text,
        DEFAULT_THRESHOLD if config.threshold is None else config.threshold,
        max_age_s=config.ttl if max_age is None else min(max_age, config.ttl),
    )
    if hit is None:
        return None
    try:
        answer = cached_answer.decode(hit.payload)
    except msgspec.MsgspecError:
        log.warning("semantic cache: deleting an undecodable entry %s", hit.entry_id)
        await cache.discard(hit.entry_id, request.tenant)
        return None
    turn.cache_score = hit.score
    return answer


def _scope(turn: Turn) -> str:
    request, runtime = turn.request, turn.runtime
    model = f"auto@{runtime.loaded.digest}" if request.model == "auto" else request.model
    tags = sorted((k, v) for k, v in request.tags.items() if k in runtime.routing_tags)
    scope = msgspec.json.encode(
        [runtime.policy.cache.namespace, model, tags, context_fingerprint(request.body)]
    )
    return hashlib.sha256(scope).hexdigest()[:32]
