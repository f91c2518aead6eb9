"""The limits stage: what a request may ask for, and whether it may run now.

Two halves, both cheap when the policy sets nothing:

- `shape`, right after ``normalize`` and before the caches: the bounds on client-controlled
  values that grow server state (``x-gateway-tags``, ``x-session-id``), the tenant's denied
  fields, and the named model's ``max_tokens`` default and ceiling. It runs before the exact
  cache so that the default it adds is part of the key. For ``model: auto`` the model is known
  only after routing: `for_model` then shapes what is sent to the chosen model, while the
  caches key the request as the client sent it, which is sound because an ``auto`` key holds
  the policy's version, and the same request under the same policy is routed the same way.
- `admit`, once the request is read: the server's `Gate` (concurrent requests and the queue,
  per replica) and the tenant's rate limits (`Limiter`, across replicas); the `Admission` it
  returns is given back when the answer, or its stream, ends. `spend` adds an answer's tokens
  to the tenant's tokens-per-minute window when its ledger record is written.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from gateway.errors import BadRequest
from gateway.pipeline.normalize import ChatRequest
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Chunks, Streaming, Turn, batches
from gateway.policy.limits import Limits, MaxTokens
from gateway.providers import Usage
from gateway.runtime.store import Runtime

LENGTH_FIELDS = ("max_completion_tokens", "max_tokens")
"""The client's ways to bound the answer's length; both are read."""


def shape(request: ChatRequest, runtime: Runtime) -> ChatRequest:
    """The request within the policy's bounds, with the named model's ``max_tokens`` default;
    raises `BadRequest` naming what is out of bounds."""
    policy = runtime.policy
    _check_headers(request, policy.limits)
    tenant = policy.tenants.get(request.tenant)
    if tenant is not None and tenant.deny_fields:
        for name in tenant.deny_fields:
            if name in request.body:
                raise BadRequest(
                    f"The field {name!r} is not allowed for this API key.",
                    param=name,
                    code="field_not_allowed",
                )
    model = policy.models.get(request.model)
    return request if model is None else for_model(request, request.model, model.max_tokens)


def for_model(request: ChatRequest, model: str, rule: MaxTokens) -> ChatRequest:
    """The request with ``model``'s default answer length when it sends none, and its ceiling
    applied (clamped, or `BadRequest`, as the policy says)."""
    if rule.default is None and rule.ceiling is None:
        return request
    body = request.body
    sent = [name for name in LENGTH_FIELDS if _count(body.get(name)) is not None]
    if not sent:
        if rule.default is None:
            return request
        return _with(request, {rule.field: rule.default})
    ceiling = rule.ceiling
    if ceiling is None:
        return request
    over = [name for name in sent if (_count(body.get(name)) or 0) > ceiling]
    if not over:
        return request
    if rule.above_ceiling == "reject":
        name = over[0]
        raise BadRequest(
            f"{name} is {body[name]}, above the most model {model!r} allows ({ceiling}).",
            param=name,
            code="max_tokens_above_ceiling",
        )
    return _with(request, dict.fromkeys(over, ceiling))


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with(request: ChatRequest, fields: Mapping[str, int]) -> ChatRequest:
    return replace(request, body=MappingProxyType({**request.body, **fields}))


def _check_headers(request: ChatRequest, limits: Limits) -> None:
    tags = request.tags
    if len(tags) > limits.max_tags:
        raise BadRequest(
            f"x-gateway-tags has {len(tags)} items; the most is {limits.max_tags}.",
            param="x-gateway-tags",
        )
    for key, value in tags.items():
        if len(key) > limits.max_tag_key_chars or len(value) > limits.max_tag_value_chars:
            raise BadRequest(
                f"The x-gateway-tags item {key[:64]!r} is too long: keys may have "
                f"{limits.max_tag_key_chars} characters, values {limits.max_tag_value_chars}.",
                param="x-gateway-tags",
            )
    session = request.session_id
    if session is not None and len(session) > limits.max_session_id_chars:
        raise BadRequest(
            f"x-session-id has {len(session)} characters; the most is "
            f"{limits.max_session_id_chars}.",
            param="x-session-id",
        )


@dataclass(slots=True)
class Admission:
    """A request let in by the server's gate or its tenant's limits, until `release`."""

    services: Services
    tenant: str
    in_gate: bool = False
    slot: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """``x-ratelimit-*`` headers for the response."""

    async def release(self) -> None:
        """Give back what was taken (twice is harmless)."""
        if self.in_gate:
            self.in_gate = False
            self.services.gate.leave()
        if self.slot is not None:
            slot, self.slot = self.slot, None
            await self.services.limiter.release(self.tenant, slot)


async def admit(services: Services, runtime: Runtime, tenant: str) -> Admission | None:
    """Let the request run, or raise `Overloaded` (503) or `RateLimited` (429); None when no
    limit applies to it, which costs no store round trip."""
    policy = runtime.policy
    limits = policy.tenants[tenant].limits if tenant in policy.tenants else None
    rated = limits is not None and limits.any
    if policy.limits.max_concurrent_requests is None and not rated:
        return None
    admission = Admission(services, tenant)
    admission.in_gate = await services.gate.enter(policy.limits)
    if rated:
        assert limits is not None
        try:
            granted = await services.limiter.admit(tenant, limits)
        except BaseException:
            await admission.release()
            raise
        admission.slot, admission.headers = granted.slot, granted.headers
    return admission


def held_until_end(result: Streaming, admission: Admission) -> Streaming:
    """The stream, whose admission is given back when it ends (finished, broken or left)."""
    return replace(result, chunks=Chunks(_released_after(batches(result.chunks), admission)))


async def _released_after(
    arrived: AsyncGenerator[list[bytes], None], admission: Admission
) -> AsyncGenerator[list[bytes], None]:
    try:
        async for batch in arrived:
            yield batch
    finally:
        try:
            await arrived.aclose()
        finally:
            await admission.release()


async def spend(turn: Turn, usage: Usage) -> None:
    """Count an answer's tokens against its tenant's tokens per minute, if it has a limit."""
    tenant = turn.runtime.policy.tenants.get(turn.request.tenant)
    if tenant is None or tenant.limits.tokens_per_minute is None:
        return
    tokens = usage.prompt_tokens + usage.completion_tokens
    await turn.services.limiter.spend(turn.request.tenant, tenant.limits, tokens)
