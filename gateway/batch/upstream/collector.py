"""Batch lines sent to a provider's own batch API: one upstream batch per gateway batch and
model, at the provider's batch price.

NOTE: the algorithm. A batch line runs through the pipeline like any other; when the call
stage finds that its model has ``batch_api`` on, it hands the provider body to `answer`
instead of calling. The line joins the group of its (gateway batch, model), releases its place
in the runner (`Ticket.park`: waiting on an upstream batch holds no concurrency, otherwise only
``batch.concurrency`` lines would ever be collected) and waits. A group is sent once no line
has joined it for the model's ``batch_api.flush_s``, or at ``max_lines``:

1. the job (upstream model, the lines' indexes) is written to the batch store, *before* the
   upstream confirms the batch, then the batch is submitted and the job rewritten with its
   upstream id;
2. the upstream batch is polled, waiting ``poll_s`` and doubling up to ``poll_max_s``;
3. once it has ended, each waiting line gets its result: the ``chat.completion`` the live call
   would have returned (usage, the ledger at the batch price, the cache store and the output
   line follow unchanged), or an error for the error file; a line the upstream did not answer
   (expired, cancelled, failed batch) fails with that reason.

Restart: a line parked here belongs to this replica's claim. When the replica dies, another
one (or this one restarted) finds the line claimed by a dead owner and inside a stored job;
it takes the claim over and runs the line through the pipeline again, and at the call stage
the line rejoins the job (`Ticket.resumed`): the job is polled again, never sent again. A job
stored without an upstream id (the replica died while submitting) may or may not have reached
the upstream: its lines fail as interrupted rather than risk a second run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gateway.batch.store import BatchStore, StateUnavailable
from gateway.batch.upstream.anthropic import AnthropicBatches
from gateway.batch.upstream.api import BatchApi, LineFailed, Outcome, Result
from gateway.batch.upstream.bedrock import BedrockBatches
from gateway.batch.upstream.openai import OpenAIBatches
from gateway.batch.wire import new_id
from gateway.errors import GatewayError, UpstreamClientError, UpstreamUnavailable
from gateway.policy.batch import UpstreamBatch
from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed, Reply

log = logging.getLogger(__name__)

_ADAPTERS: dict[str, Callable[[ModelConfig], BatchApi]] = {
    "anthropic": AnthropicBatches,
    "bedrock": BedrockBatches,
    "openai_compatible": OpenAIBatches,
}
WINDOW_S = 25 * 3600.0
"""How long a job is polled at most: past the upstream's own 24 h window, an upstream batch
still not ended is given up as expired."""
_ENDED_CODES = {"expired": "batch_expired", "cancelled": "batch_cancelled"}

current: ContextVar[Ticket | None] = ContextVar("upstream_batch_ticket", default=None)
"""The batch line the running task is answering, set by `gateway.batch.line.run_line`; the
call stage reads it (a live request has none)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """A batch line on its way through the pipeline, as the call stage sees it."""

    collector: Collector
    tenant: str
    batch_id: str
    index: int
    park: Callable[[], None]
    """Release the line's place in the runner while it waits on an upstream batch."""
    resumed: bool = False
    """The line was sent upstream by a replica that stopped: it rejoins that job."""

    async def answer(self, model: str, config: ModelConfig, body: dict[str, Any]) -> Reply | None:
        """The line's answer from an upstream batch, or None when it is to be called as a live
        request is (too few lines for one); a `GatewayError` for the error file."""
        return await self.collector.answer(self, model, config, body)


@dataclass(slots=True)
class _Group:
    """Lines of one gateway batch for one model, not sent yet."""

    tenant: str
    model: str
    api: BatchApi
    min_lines: int
    requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    waiting: dict[int, asyncio.Future[Result]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class Collector:
    def __init__(self, store: BatchStore, models: Callable[[], Mapping[str, ModelConfig]]) -> None:
        self._store = store
        self._models = models
        """The current policy's models (a resumed or cancelled job names its model)."""
        self._groups: dict[tuple[str, str], _Group] = {}
        self._waiting: dict[str, dict[int, asyncio.Future[Result]]] = {}
        """Lines waiting on each job, by job id and line index."""
        self._jobs: dict[str, dict[str, Any]] = {}
        """The jobs this replica knows of, by id."""
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._pokes: dict[str, asyncio.Event] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._apis: dict[int, tuple[ModelConfig, BatchApi]] = {}
        self._cancelled: set[str] = set()
        """Gateway batches cancelled here: a line arriving later is not sent."""

    async def answer(
        self, ticket: Ticket, model: str, config: ModelConfig, body: dict[str, Any]
    ) -> Reply | None:
        if ticket.resumed:
            future = await self._rejoin(ticket)
        else:
            assert config.batch_api is not None  # the call stage asks only then
            future = self._join(ticket, model, config, config.batch_api, body)
        ticket.park()
        result = await future
        if isinstance(result, LineFailed):
            raise _error(model, result)
        return result

    def _join(
        self,
        ticket: Ticket,
        model: str,
        config: ModelConfig,
        options: UpstreamBatch,
        body: dict[str, Any],
    ) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        api = self._api(config)
        request = api.request(str(ticket.index), body)
        if ticket.batch_id in self._cancelled:
            request = _unanswered("cancelled")
        if isinstance(request, LineFailed):
            future.set_result(request)
            return future
        key = (ticket.batch_id, model)
        group = self._groups.setdefault(key, _Group(ticket.tenant, model, api, options.min_lines))
        group.requests[ticket.index], group.waiting[ticket.index] = request, future
        if group.timer is not None:
            group.timer.cancel()
        if len(group.requests) >= options.max_lines:
            self._flush(key)
        else:
            loop = asyncio.get_running_loop()
            group.timer = loop.call_later(options.flush_s, self._flush, key)
        return future

    def _flush(self, key: tuple[str, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        if len(group.requests) < group.min_lines:
            for future in group.waiting.values():
                if not future.done():
                    future.set_result(None)  # called line by line
            return
        task = asyncio.create_task(self._send(key[0], group))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, batch_id: str, group: _Group) -> None:
        """Store the job, submit it, store its upstream id, and poll it."""
        indexes = sorted(group.requests)
        job: dict[str, Any] = {
            "id": new_id("ubatch_"),
            "tenant": group.tenant,
            "batch": batch_id,
            "model": group.model,
            "indexes": indexes,
            "upstream_id": None,
            "created_at": int(time.time()),
        }
        self._waiting[job["id"]] = group.waiting
        try:
            await self._store.put_job(batch_id, job)
            job["upstream_id"] = await group.api.submit([group.requests[i] for i in indexes])
        except Exception as exc:  # a bug too: the lines must not wait for ever
            log.warning("batch %s: upstream batch of %s not sent: %r", batch_id, group.model, exc)
            reason = exc.kind if isinstance(exc, AttemptFailed) else type(exc).__name__
            failed = LineFailed(502, "upstream_batch_failed", f"Not sent upstream: {reason}.")
            self._settle(job["id"], Outcome("failed", {}), failed)
            return
        log.info(
            "batch %s: %d lines sent to %s as %s", batch_id, len(indexes), group.model, job["id"]
        )
        self._jobs[job["id"]] = job
        with contextlib.suppress(StateUnavailable):  # else it is polled, but not resumable
            await self._store.put_job(batch_id, job)
        self._poll_soon(job)

    async def _rejoin(self, ticket: Ticket) -> asyncio.Future[Result]:
        """The future of a resumed line: its job polled again (never sent again)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        job = self._job_of(ticket)
        if job is None:
            for stored in await self._store.jobs(ticket.batch_id):
                self._jobs.setdefault(stored["id"], stored)
            job = self._job_of(ticket)
        if job is None or job["upstream_id"] is None:
            future.set_result(
                LineFailed(
                    502,
                    "line_interrupted",
                    "The gateway replica sending this line upstream stopped before the upstream "
                    "confirmed its batch; it was not sent again, since it may have arrived.",
                )
            )
            return future
        self._waiting.setdefault(job["id"], {})[ticket.index] = future
        self._poll_soon(job)
        return future

    def _job_of(self, ticket: Ticket) -> dict[str, Any] | None:
        for job in self._jobs.values():
            if job["batch"] == ticket.batch_id and ticket.index in job["indexes"]:
                return job
        return None

    def _poll_soon(self, job: dict[str, Any]) -> None:
        if job["id"] not in self._polls:
            self._polls[job["id"]] = asyncio.create_task(self._poll(job))

    async def _poll(self, job: dict[str, Any]) -> None:
        config = self._models().get(job["model"])
        if config is None or config.batch_api is None:
            failed = LineFailed(502, "upstream_batch_failed", "The model left the policy.")
            self._settle(job["id"], Outcome("failed", {}), failed)
            return
        api, options = self._api(config), config.batch_api
        poke = self._pokes.setdefault(job["id"], asyncio.Event())
        delay = options.poll_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poke.wait(), delay)
            poke.clear()
            try:
                outcome = await api.poll(job["upstream_id"])
            except Exception as exc:  # transient, or unreadable: asked again, up to the window
                log.warning("upstream batch %s: status unknown: %r", job["upstream_id"], exc)
                outcome = None
            if outcome is None and time.time() - job["created_at"] > WINDOW_S:
                outcome = Outcome("expired", {})
            if outcome is not None:
                break
            delay = min(delay * 2, options.poll_max_s)
        log.info("upstream batch %s ended %s", job["upstream_id"], outcome.status)
        self._settle(job["id"], outcome)

    def _settle(self, job_id: str, outcome: Outcome, failed: LineFailed | None = None) -> None:
        """Resolve the job's waiting lines: each with its result, else ``failed`` (or why the
        batch ended without it)."""
        self._polls.pop(job_id, None)
        self._pokes.pop(job_id, None)
        self._jobs.pop(job_id, None)  # a line resumed later reads it from the store again
        for index, future in self._waiting.pop(job_id, {}).items():
            if future.done():  # its line was cancelled meanwhile
                continue
            result = outcome.results.get(str(index)) or failed or _unanswered(outcome.status)
            future.set_result(result)

    async def cancel(self, batch_id: str) -> None:
        """Cancel the batch's upstream batches (each once) and fail its lines not sent yet;
        what the upstream answered before the cancel is kept. Raises `StateUnavailable`."""
        self._cancelled.add(batch_id)
        for key in [key for key in self._groups if key[0] == batch_id]:
            group = self._groups.pop(key)
            if group.timer is not None:
                group.timer.cancel()
            for future in group.waiting.values():
                if not future.done():
                    future.set_result(_unanswered("cancelled"))
        for job in await self._store.jobs(batch_id):
            config = self._models().get(job["model"])
            if job["upstream_id"] is None or job.get("cancelled"):
                continue
            if config is None or config.batch_api is None:  # gone from the policy: polled no more
                continue
            try:
                await self._api(config).cancel(job["upstream_id"])
            except AttemptFailed as exc:  # the runner asks again on its next pass
                log.warning("upstream batch %s: cancel failed: %s", job["upstream_id"], exc)
                continue
            await self._store.put_job(batch_id, {**job, "cancelled": True})
            if poke := self._pokes.get(job["id"]):
                poke.set()

    def _api(self, config: ModelConfig) -> BatchApi:
        """One adapter per policy model entry (a reloaded policy's entry gets its own)."""
        found = self._apis.get(id(config))
        if found is None:
            api = _ADAPTERS.get(config.provider, OpenAIBatches)(config)
            found = self._apis[id(config)] = (config, api)
        return found[1]

    async def aclose(self) -> None:
        """Send the groups still collecting (their jobs stored, so a restart resumes them),
        stop polling, close the adapters."""
        for key in list(self._groups):
            self._flush(key)
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        for task in self._polls.values():
            task.cancel()
        await asyncio.gather(*self._polls.values(), return_exceptions=True)
        for _, api in self._apis.values():
            await api.aclose()
        self._apis.clear()


def _unanswered(status: str) -> LineFailed:
    code = _ENDED_CODES.get(status, "upstream_batch_failed")
    return LineFailed(502, code, f"The upstream batch ended ({status}) without answering it.")


def _error(model: str, failed: LineFailed) -> GatewayError:
    """A line's failure as the live call's error would be: the upstream's 4xx body when the
    line itself was at fault, else a 502 naming the reason (never the upstream's text)."""
    probe = AttemptFailed("status", failed.message, status=failed.status, body=failed.body)
    if failed.body is not None and probe.clients_fault:
        return UpstreamClientError(failed.status, failed.body, failed.message)
    attempt = {"model": model, "kind": "upstream_batch", "status": failed.status}
    message = failed.message
    if failed.body is not None:  # the upstream's own words may quote the operator's key
        message = f"The upstream batch answered this line HTTP {failed.status} ({failed.code})."
    return UpstreamUnavailable(502, message, failed.code, [{**attempt, "error": failed.code}])
