"""Calling the chosen model: retries on one model, then its fallbacks, in order.

NOTE: the algorithm. Candidates are the chosen model followed by its ``fallbacks``. Each
candidate gets up to ``retries.max_attempts`` attempts, while its ``retries.budget_s`` lasts,
on transient failures only (connection errors, timeouts, 429, 5xx), waiting as the upstream's
Retry-After asks or else with jittered exponential backoff. A failure that is the client's
fault (400, 413, 422) ends everything at once and is passed on, since no other model would
accept the request either. Other failures (401, 403, 404) move on to the next candidate. When
every candidate has failed, one `UpstreamUnavailable` lists every attempt.

The client sees each failed attempt as a short reason of the gateway's own (model, kind,
status, elapsed time), never the upstream's error text, which can quote the operator's key
("Incorrect API key provided: sk-ab***yz"); that detail is logged, at WARNING, with the
request id.

A stream counts as started, and can no longer fall back, once its first chunk has arrived.

A batch line whose model has ``batch_api`` on is not called: its body goes to that model's
upstream batch (`gateway.batch.upstream`), whose answer comes back as the call's would; the
upstream batch API retries on its own, so neither retries nor fallbacks apply. A line not sent
upstream (too few for the model's minimum) is called as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from gateway import telemetry
from gateway.batch.upstream.collector import current
from gateway.errors import UpstreamClientError, UpstreamUnavailable
from gateway.pipeline.route import Decision
from gateway.pipeline.turn import Turn
from gateway.policy.batch import BATCH_TAG
from gateway.policy.schema import Retries
from gateway.providers import AttemptFailed, Embedded, FailureKind, Provider, Reply

T = TypeVar("T")
log = logging.getLogger(__name__)
_REASONS: dict[FailureKind, str] = {
    "timeout": "timed out",
    "connect": "could not connect",
    "protocol": "malformed response",
}


@dataclass(frozen=True, slots=True)
class Started:
    """A stream whose first chunk has arrived, so its response can begin."""

    first: list[bytes]
    """The chunks that arrived with the first one."""
    first_at: float
    """When the first chunk arrived (``time.monotonic()``): the time to first token."""
    rest: AsyncGenerator[list[bytes], None]

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        """The first batch of chunks, then the rest; closing this closes the upstream stream."""
        try:
            yield self.first
            async for batch in self.rest:
                yield batch
        finally:
            await self.rest.aclose()


async def complete(turn: Turn, decision: Decision) -> tuple[str, Reply]:
    """The name of the model that answered, and its answer."""
    ticket = current.get()
    if ticket is not None and (
        ticket.resumed or turn.runtime.policy.models[decision.model].batch_api
    ):
        config = turn.runtime.policy.models[decision.model]
        with turn.trace.stage("call"):
            answer = await ticket.answer(decision.model, config, _body(turn, decision.model))
        if answer is not None:
            return decision.model, answer
    with turn.trace.stage("call"):
        model, reply = await _first_success(
            turn, decision, lambda p, name: p.complete(_body(turn, name))
        )
    _remember_session(turn, decision, model)
    return model, reply


async def stream(turn: Turn, decision: Decision) -> tuple[str, Started]:
    """The name of the model that is answering, and its stream, started (its first chunk in)."""

    async def start(provider: Provider, name: str) -> Started:
        batches = provider.stream(_body(turn, name))
        try:
            first = await anext(batches)
        except StopAsyncIteration:
            raise AttemptFailed("protocol", "the stream ended before its first chunk") from None
        except BaseException:
            await batches.aclose()
            raise
        return Started(first, time.monotonic(), batches)

    with turn.trace.stage("call"):  # up to the first chunk; the rest streams after the response
        model, started = await _first_success(turn, decision, start)
    _remember_session(turn, decision, model)
    return model, started


async def embed(turn: Turn, decision: Decision, body: dict[str, Any]) -> tuple[str, Embedded]:
    """The name of the model that answered, and the vectors of ``body``'s inputs."""
    with turn.trace.stage("call"):
        return await _first_success(turn, decision, lambda p, _: p.embed(body))


def _body(turn: Turn, model: str) -> dict[str, Any]:
    """The request's body for ``model``. To a model that schedules by priority, a batch line
    carries the policy's ``batch.priority`` and a live request none (the server's default, 0),
    so live requests go first; a client's own ``priority`` is dropped there, since one tenant
    must not put itself ahead of the others."""
    body = dict(turn.request.body)
    if turn.runtime.policy.models[model].schedules_by_priority:
        body.pop("priority", None)
        if BATCH_TAG in turn.request.tags:
            body["priority"] = turn.runtime.policy.batch.priority
    return body


def _remember_session(turn: Turn, decision: Decision, model: str) -> None:
    """A sticky conversation keeps the model that answered its first turn."""
    if decision.session is not None:
        turn.runtime.sessions.remember(decision.session, model)


async def _first_success(
    turn: Turn, decision: Decision, attempt: Callable[[Provider, str], Awaitable[T]]
) -> tuple[str, T]:
    attempts: list[dict[str, Any]] = []
    last: AttemptFailed | None = None
    runtime = turn.runtime
    policy = runtime.policy
    for name in (decision.model, *policy.models[decision.model].fallbacks):
        provider = runtime.providers[name]
        if last is not None:
            telemetry.fallback(attempts[-1]["model"], name)

        async def once(name: str = name, provider: Provider = provider) -> T:
            started = time.monotonic()
            number = 1 + sum(a["model"] == name for a in attempts)
            try:
                with telemetry.attempt(name, policy.models[name], number):
                    return await attempt(provider, name)
            except AttemptFailed as exc:
                elapsed_ms = round((time.monotonic() - started) * 1000, 1)
                log.warning(
                    "request %s: attempt %d on %s failed after %.1f ms (%s): %s",
                    turn.request.request_id,
                    number,
                    name,
                    elapsed_ms,
                    exc.kind,
                    exc.message,
                )
                attempts.append(
                    {
                        "model": name,
                        "kind": exc.kind,
                        "status": exc.status,
                        "error": _reason(exc),
                        "elapsed_ms": elapsed_ms,
                    }
                )
                if exc.clients_fault:
                    raise UpstreamClientError(
                        exc.status or 400, exc.body or {}, exc.message
                    ) from exc
                raise

        try:
            return name, await _with_retries(policy.models[name].retries, once)
        except AttemptFailed as exc:
            last = exc
    assert last is not None  # every candidate failed, so at least one attempt did
    raise _unavailable(last, attempts)


async def _with_retries(retries: Retries, once: Callable[[], Awaitable[T]]) -> T:
    """The first attempt directly, the retries through tenacity.

    Building tenacity's machinery costs about 0.1 to 0.3 ms, more than the rest of the gateway's
    work on a request, so the common case (the first attempt succeeds) does without it.
    """
    started = time.monotonic()
    try:
        return await once()
    except AttemptFailed as exc:
        delay = exc.retry_after if exc.retry_after is not None else retries.backoff_initial_s
        if (
            not exc.retryable
            or retries.max_attempts < 2
            or time.monotonic() - started + delay > retries.budget_s
        ):
            raise
    await asyncio.sleep(delay)
    remaining = retries.budget_s - (time.monotonic() - started)
    async for retry in _retrying(retries, retries.max_attempts - 1, remaining):
        with retry:
            return await once()
    raise AssertionError("unreachable: tenacity re-raises the last failure")


def _retrying(retries: Retries, attempts: int, budget_s: float) -> AsyncRetrying:
    backoff = wait_exponential_jitter(
        multiplier=retries.backoff_initial_s, max=retries.backoff_max_s, exp_base=2
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, AttemptFailed) and exc.retry_after is not None:
            return exc.retry_after
        return float(backoff(state))

    return AsyncRetrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(budget_s),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, AttemptFailed) and e.retryable),
        reraise=True,
    )


def _reason(exc: AttemptFailed) -> str:
    """What a client is told about one failed attempt: the gateway's words only."""
    if exc.kind == "status":
        return f"HTTP {exc.status}"
    return _REASONS[exc.kind]


def _unavailable(last: AttemptFailed, attempts: list[dict[str, Any]]) -> UpstreamUnavailable:
    if last.kind == "timeout":
        status, code = 504, "upstream_timeout"
    elif last.kind == "connect" or last.status in (429, 503):
        status, code = 503, "upstream_unavailable"
    else:
        status, code = 502, "upstream_error"
    headers = {"retry-after": str(round(last.retry_after))} if last.retry_after else None
    summary = "; ".join(f"{a['model']}: {a['error']}" for a in attempts)
    return UpstreamUnavailable(
        status,
        f"Every upstream attempt failed ({len(attempts)}): {summary}",
        code,
        attempts,
        headers,
    )
