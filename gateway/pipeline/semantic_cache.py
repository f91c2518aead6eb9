"""The semantic-cache stage: which requests may use it, and in which scope.

:mod:`gateway.semantic` does the search, the meaning guard and the Redis sharing; this stage
decides what the pipeline asks of it. A request takes part when the policy enables the cache,
its text is not empty, and it is cacheable under the semantic cache's own (lower) temperature
limit. ``Cache-Control`` applies as for the exact cache.

Scope: entries are searched per tenant and per *scope*, a hash of the policy's cache namespace,
the model choice (a named model, or ``auto`` with the policy version, since a new policy may
route differently), the routing tags and the request's context fingerprint (system prompt,
earlier turns, tools, output-shaping parameters). An answer is therefore only ever offered to
the same tenant, asking in the same context, under the same routing. With ``scope: user`` the
end user (``user`` / ``safety_identifier``, Anthropic's ``metadata.user_id``) is part of the
hash too, so one member of a tenant cannot plant an answer that another is served; a request
that names no end user then takes no part (see ``exact_cache.unscoped``).

Strictness: ``strict`` or ``balanced`` picks an operating point of the hit rule (the cosine
threshold and the learned verifier's cutoff, :data:`gateway.semantic.STRICTNESS`); a
``threshold`` set in the policy replaces the point's threshold, the cutoff stays.

The cache itself is :class:`gateway.semantic.lazy.LazySemanticCache`, opened once; the
threshold, the strictness, the scope, the temperature limit and ``enabled`` are read here, per
request.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import msgspec

from gateway.ml import guard
from gateway.pipeline import cached_answer
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.exact_cache import cacheable, unscoped
from gateway.pipeline.turn import Turn
from gateway.semantic import STRICTNESS, context_fingerprint
from gateway.semantic.cache import GuardCheck

log = logging.getLogger(__name__)


def wanted(turn: Turn) -> bool:
    """Whether the request reads or writes the semantic cache at all."""
    config = turn.runtime.policy.cache.semantic
    control = turn.request.cache_control
    return (
        config.enabled
        and (control.read or control.write)
        and cacheable(turn.request.body, config.max_temperature)
        and not unscoped(turn.request, turn.runtime)
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
    point = STRICTNESS[config.strictness]
    hit = await cache.lookup(
        request.tenant,
        _scope(turn),
        understanding.vector,
        understanding.text,
        point.threshold if config.threshold is None else config.threshold,
        max_age_s=config.ttl if max_age is None else min(max_age, config.ttl),
        check=_guard(point.cutoff),
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


@functools.cache
def _guard(cutoff: float) -> GuardCheck:
    """The meaning guard refusing below ``cutoff`` (loaded by the time the cache is open)."""
    return guard.default_guard().with_cutoff(cutoff).check


def _scope(turn: Turn) -> str:
    request, runtime = turn.request, turn.runtime
    model = f"auto@{runtime.loaded.digest}" if request.model == "auto" else request.model
    tags = sorted((k, v) for k, v in request.tags.items() if k in runtime.routing_tags)
    parts: list[object] = [
        runtime.policy.cache.namespace,
        model,
        tags,
        context_fingerprint(request.body),
    ]
    if runtime.policy.cache.semantic.scope == "user":
        parts.append(request.end_user)
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:32]
