"""The batch runner: each replica runs the lines of every unfinished batch, under the policy's
concurrency, yielding to live requests.

NOTE: the algorithm. A loop looks at the unfinished batches, oldest first, every `POLL_S` (at
once when nudged) and moves each one on:

- ``validating``: the input file is checked whole; the batch becomes ``in_progress`` or
  ``failed`` (with the file's errors). Status moves are compare-and-set in the store, so two
  replicas never both make one.
- ``in_progress``: the lines no replica has claimed are claimed one by one (an atomic claim in
  the store) and run, each once a place is free: ``batch.concurrency`` places, or while live
  requests are in flight (`LiveTraffic`) as many as keep them within the policy's latency bound
  (`gateway.batch.pace`). A line's
  result is stored as the line of the output or error file it will be. Once every line has a
  result the batch is ``finalizing``.
- ``finalizing`` / ``cancelling``: once no line is in flight, the output and error files are
  written and the batch is ``completed`` (``expired`` past its window) or ``cancelled``.

At most once: a line runs only after its claim succeeded, and a claim is never taken back.
A replica beats every `BEAT_S`; a line claimed by a replica whose beat is older than
`BEAT_TTL_S` (killed mid-call: its model may have answered) goes to the error file as
``line_interrupted`` rather than run again. A replica that stops cleanly lets its lines in
flight finish first (within the shutdown grace), so a restart loses none.

Lines whose model sends them to its provider's batch API (`gateway.batch.upstream`) wait on
an upstream batch without holding a place (`_park`). A stopping replica sends the lines it is
still collecting; a line of a stored upstream job, claimed by a replica that stopped, is taken
over (`reclaim`) and run through the pipeline again, which rejoins the job instead of calling;
cancelling a batch cancels its upstream batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.batch.line import Door, run_line
from gateway.batch.pace import Pace
from gateway.batch.service import Batches
from gateway.batch.store import LineState, StateUnavailable
from gateway.batch.upstream.collector import Collector, Ticket
from gateway.batch.wire import Line, failed_line, file_object, new_id, read_lines
from gateway.pipeline.services import Services

log = logging.getLogger(__name__)

POLL_S = 1.0
BEAT_S = 2.0
BEAT_TTL_S = 10.0
STATUS_CHECK_S = 1.0
"""How often dispatch reads its batch's status again (a cancel from another replica)."""
PURGE_S = 3600.0
"""How often a replica deletes what is past the policy's ``batch.retention``."""
SLOT_POLL_S = 0.05
"""How soon a waiting line notices that live traffic has gone quiet."""
FINISH_TRIES = 5


class Runner:
    def __init__(
        self,
        services: Services,
        batches: Batches,
        doors: Mapping[str, Door],
        owner: str | None = None,
    ) -> None:
        self.services, self.batches, self.doors = services, batches, doors
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._running: set[asyncio.Task[None]] = set()
        self._parked: set[asyncio.Task[None]] = set()
        """Lines waiting on an upstream batch: they hold no place."""
        self.upstream = Collector(batches.store, lambda: services.policies.current.policy.models)
        self._freed = asyncio.Event()
        self._inputs: dict[str, list[Line]] = {}
        """Each batch's lines, read from its input file once per replica."""
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._pace = Pace(services.live)
        services.live.batch_lines = lambda: len(self._running)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._beat())]

    async def aclose(self, grace_s: float) -> None:
        """Claim no more lines; let those in flight finish within ``grace_s``, then cancel the
        rest (reported as interrupted, never run again)."""
        self._stopping = True
        self.batches.nudge.set()
        self._freed.set()
        deadline = time.monotonic() + grace_s
        while self._running and time.monotonic() < deadline:  # a line may park meanwhile
            await asyncio.wait(set(self._running), timeout=min(SLOT_POLL_S, grace_s))
        await self.upstream.aclose()  # its parked lines are resumed after a restart
        late = self._running | self._parked
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _beat(self) -> None:
        while True:
            try:
                await self.batches.store.beat(self.owner, BEAT_TTL_S)
            except StateUnavailable as exc:
                log.warning("batch runner: heartbeat failed: %s", exc)
            await asyncio.sleep(BEAT_S)

    async def _loop(self) -> None:
        nudge, purged = self.batches.nudge, float("-inf")
        while not self._stopping:
            nudge.clear()
            try:
                if time.monotonic() - purged > PURGE_S:
                    await self._purge()
                    purged = time.monotonic()
                for tenant, batch_id in await self.batches.store.unfinished():
                    if self._stopping:
                        return
                    await self._advance(tenant, batch_id)
            except StateUnavailable as exc:
                log.warning("batch runner: %s", exc)
            except Exception:  # a bug must not stop every batch of this replica for good
                log.exception("batch runner: a pass over the batches failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nudge.wait(), POLL_S)

    async def _purge(self) -> None:
        """Delete the files and finished batches older than the policy's retention."""
        retention = self.services.policies.current.policy.batch.retention
        for file_id in await self.batches.store.purge(time.time() - retention):
            await self.batches.files.remove(file_id)

    async def _advance(self, tenant: str, batch_id: str) -> None:
        batch = await self.batches.store.get("batch", tenant, batch_id)
        if batch is None:
            return
        status = batch["status"]
        if status == "validating":
            await self._validate(tenant, batch)
        elif status == "in_progress":
            await self._progress(tenant, batch)
        else:  # finalizing, cancelling
            await self._finalize(tenant, batch)

    async def _validate(self, tenant: str, batch: dict[str, Any]) -> None:
        read = await self._read_input(tenant, batch)
        if read is None:
            return
        lines, errors = read
        if errors:
            await self._fail(tenant, batch, errors)
            return
        counts = {"total": len(lines), "completed": 0, "failed": 0}
        changes = {"status": "in_progress", "in_progress_at": int(time.time())}
        changes["request_counts"] = counts
        if await self.batches.store.update(tenant, batch["id"], {"validating"}, changes):
            self._inputs[batch["id"]] = lines

    async def _read_input(
        self, tenant: str, batch: dict[str, Any]
    ) -> tuple[list[Line], list[dict[str, Any]]] | None:
        """The input file's lines or errors; None when its bytes are not on this replica's
        disk although the file exists (a replica on another volume has them: it runs it)."""
        file_id = batch["input_file_id"]
        try:
            data = await self.batches.files.read(file_id)
        except FileNotFoundError:
            if await self.batches.store.get("file", tenant, file_id) is not None:
                log.warning("batch %s: file %s is not on this replica's disk", batch["id"], file_id)
                return None
            error = {"code": "file_not_found", "message": "The input file was deleted."}
            return [], [{**error, "param": "input_file_id", "line": None}]
        policy = self.services.policies.current.policy
        # Off the event loop: a file of 50,000 lines takes a while to check.
        return await asyncio.to_thread(read_lines, data, batch["endpoint"], policy.batch.max_lines)

    async def _input(self, tenant: str, batch: dict[str, Any]) -> list[Line] | None:
        """The batch's lines; None when this replica cannot run it (the batch has failed if its
        input file is gone)."""
        lines = self._inputs.get(batch["id"])
        if lines is None:
            read = await self._read_input(tenant, batch)
            if read is None:
                return None
            lines, errors = read
            if errors:
                await self._fail(tenant, batch, errors)
                return None
            self._inputs[batch["id"]] = lines
        return lines

    async def _fail(self, tenant: str, batch: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        """The batch ``failed``, with OpenAI's ``errors`` list; its lines' state goes."""
        changes = {"status": "failed", "failed_at": int(time.time())}
        changes["errors"] = {"object": "list", "data": errors}
        if await self.batches.store.update(tenant, batch["id"], {batch["status"]}, changes):
            await self.batches.store.forget_lines(batch["id"])

    async def _progress(self, tenant: str, batch: dict[str, Any]) -> None:
        lines = await self._input(tenant, batch)
        if lines is None:
            return
        store, batch_id = self.batches.store, batch["id"]
        if time.time() < batch["expires_at"]:
            await self._dispatch(tenant, batch, lines, await store.lines(batch_id))
            if self._stopping:
                return
        states = await store.lines(batch_id)
        if time.time() >= batch["expires_at"]:
            await self._expire(batch_id, lines, states)
            states = await store.lines(batch_id)
        await self._settle_orphans(tenant, batch, lines, states)
        if sum(await store.counts(batch_id)) == len(lines):
            changes = {"status": "finalizing", "finalizing_at": int(time.time())}
            moved = await store.update(tenant, batch_id, {"in_progress"}, changes)
            if moved is not None:
                await self._finalize(tenant, moved)

    async def _dispatch(
        self,
        tenant: str,
        batch: dict[str, Any],
        lines: list[Line],
        states: dict[int, LineState],
    ) -> None:
        """Claim and start the lines nobody has claimed, each when a place is free."""
        door, batch_id = self.doors[batch["endpoint"]], batch["id"]
        checked = time.monotonic()
        for line in lines:
            if line.index in states:
                continue
            if not await self._slot():
                return
            if time.monotonic() - checked > STATUS_CHECK_S:
                checked = time.monotonic()
                current = await self.batches.store.get("batch", tenant, batch_id)
                if current is None or current["status"] != "in_progress":
                    return
                if time.time() >= current["expires_at"]:
                    return
            if not await self.batches.store.claim(batch_id, line.index, self.owner):
                continue
            self._start(door, tenant, batch_id, line)

    def _start(
        self, door: Door, tenant: str, batch_id: str, line: Line, resumed: bool = False
    ) -> None:
        task = asyncio.create_task(self._run(door, tenant, batch_id, line, resumed))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _park(self, task: asyncio.Task[None]) -> None:
        """The line of ``task`` waits on an upstream batch: its place is free for another."""
        if task in self._running:
            self._running.discard(task)
            self._parked.add(task)
            self._freed.set()

    async def _slot(self) -> bool:
        """Wait for a free place; False when the runner is stopping."""
        live = self.services.live
        while not self._stopping:
            config = self.services.policies.current.policy.batch
            busy = live.busy(self._pace.quiet_s(config))
            limit = self._pace.while_live(config) if busy else config.concurrency
            if len(self._running) < limit:
                return True
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), SLOT_POLL_S)
        return False

    async def _run(self, door: Door, tenant: str, batch_id: str, line: Line, resumed: bool) -> None:
        task = asyncio.current_task()
        assert task is not None
        park = functools.partial(self._park, task)
        ticket = Ticket(self.upstream, tenant, batch_id, line.index, park, resumed)
        ok, result = await run_line(self.services, door, tenant, batch_id, line, ticket)
        for attempt in range(FINISH_TRIES):
            try:
                await self.batches.store.finish(batch_id, line.index, ok, result)
                return
            except StateUnavailable as exc:
                log.warning("batch %s: result of line %d not stored: %s", batch_id, line.index, exc)
                await asyncio.sleep(2**attempt)
        log.error("batch %s: result of line %d lost after retries", batch_id, line.index)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._parked.discard(task)
        self._freed.set()
        if not self._running and not self._parked:
            self.batches.nudge.set()  # the batch may be complete: look now

    async def _expire(self, batch_id: str, lines: list[Line], states: dict[int, LineState]) -> None:
        """Past the completion window: the lines never started go to the error file."""
        for line in lines:
            if line.index not in states and await self.batches.store.claim(
                batch_id, line.index, self.owner
            ):
                result = failed_line(line, "batch_expired", "The batch expired before this ran.")
                await self.batches.store.finish(batch_id, line.index, False, result)

    async def _settle_orphans(
        self, tenant: str, batch: dict[str, Any], lines: list[Line], states: dict[int, LineState]
    ) -> None:
        """Lines claimed by a replica that stopped beating without a result: taken over and run
        again when they are in a stored upstream job (they rejoin it), else interrupted."""
        store, batch_id = self.batches.store, batch["id"]
        orphans = {
            index: state.owner
            for index, state in states.items()
            if state.result is None and state.owner != self.owner
        }
        if not orphans:
            return
        alive = await store.alive(set(orphans.values()))
        sent = {index for job in await store.jobs(batch_id) for index in job["indexes"]}
        door = self.doors[batch["endpoint"]]
        for index, owner in orphans.items():
            if owner in alive:
                continue
            if index in sent:
                if await store.reclaim(batch_id, index, owner, self.owner):
                    self._start(door, tenant, batch_id, lines[index], resumed=True)
            else:
                result = failed_line(
                    lines[index],
                    "line_interrupted",
                    "The gateway replica running this line stopped mid-call; it was not run "
                    "again, since its model may have answered.",
                )
                await store.finish(batch_id, index, False, result)

    async def _finalize(self, tenant: str, batch: dict[str, Any]) -> None:
        """Once no line is in flight: the output and error files, and the final status."""
        lines = await self._input(tenant, batch)
        if lines is None:
            return
        store, batch_id, status = self.batches.store, batch["id"], batch["status"]
        if status == "cancelling":
            await self.upstream.cancel(batch_id)
        await self._settle_orphans(tenant, batch, lines, await store.lines(batch_id))
        states = await store.lines(batch_id)
        if any(state.result is None for state in states.values()):
            return  # still in flight somewhere: next time
        ordered = [states[i] for i in sorted(states)]
        ok = [s.result for s in ordered if s.ok and s.result is not None]
        failed = [s.result for s in ordered if not s.ok and s.result is not None]
        final = "cancelled" if status == "cancelling" else "completed"
        if final == "completed" and time.time() >= batch["expires_at"]:
            final = "expired"
        output_id = await self._write(tenant, batch_id, "output", ok)
        error_id = await self._write(tenant, batch_id, "error", failed)
        changes = {
            "status": final,
            f"{final}_at": int(time.time()),
            "output_file_id": output_id,
            "error_file_id": error_id,
            "request_counts": {"total": len(lines), "completed": len(ok), "failed": len(failed)},
        }
        if await store.update(tenant, batch_id, {status}, changes) is None:
            for file_id in (output_id, error_id):  # another replica finished it first
                if file_id is not None:
                    await store.delete("file", tenant, file_id)
                    await self.batches.files.remove(file_id)
            return
        await store.forget_lines(batch_id)
        self._inputs.pop(batch_id, None)

    async def _write(
        self, tenant: str, batch_id: str, kind: str, results: list[bytes]
    ) -> str | None:
        """A file of result lines (None when there are none, as OpenAI leaves it)."""
        if not results:
            return None
        file_id = new_id("file-")
        data = b"\n".join(results) + b"\n"
        await self.batches.files.write(file_id, data)
        obj = file_object(file_id, len(data), f"{batch_id}_{kind}.jsonl", "batch_output")
        await self.batches.store.put("file", tenant, obj)
        return file_id
