"""One line of a batch, run as a request of its tenant through the same door and pipeline as a
live request: the door's reader (so a line is read exactly as ``POST`` to its endpoint would
be), the request's bounds, the caches, routing (``when: {batch: true}`` matches), the call,
and the ledger record, which carries the batch id (the reserved tag `BATCH_TAG`). A line
whose model has ``batch_api`` on is answered by an upstream batch instead of a call of its own
(the line's `Ticket`, which the call stage reads).

What a line does not share with a live request: the server's gate and the tenant's request
rate limits (the batch runner's own concurrency bounds batch work, and it yields to live
requests instead of queueing with them); its tokens still count against the tenant's
tokens-per-minute window and budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec

from gateway.batch.upstream.collector import Ticket, current
from gateway.batch.wire import Line, failed_line, output_line
from gateway.errors import GatewayError
from gateway.pipeline import ledger, limits
from gateway.pipeline.normalize import Arrival, ChatRequest, new_request_id
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Completed, Streaming, Turn
from gateway.policy.batch import BATCH_TAG

log = logging.getLogger(__name__)

Parse = Callable[[bytes, Arrival, Mapping[str, str]], ChatRequest]
Answer = Callable[[Turn], Awaitable[Completed | Streaming]]
Door = Callable[[Services], tuple[Parse, Answer]]
"""An endpoint's reader and answerer, made per line (a door may keep state per request)."""


async def run_line(
    services: Services,
    door: Door,
    tenant: str,
    batch_id: str,
    line: Line,
    ticket: Ticket | None = None,
) -> tuple[bool, bytes]:
    """The line's result (True for a 2xx) as a line of the output or the error file."""
    current.set(ticket)  # this task's own context: the line's call stage sees it
    arrival = Arrival(new_request_id(), tenant, (time.time(), time.monotonic()))
    runtime = services.policies.current
    trace = services.telemetry.start_request(None, arrival.request_id)
    # As a header, so that a door that reads the request again (a Responses continuation) keeps it.
    headers = {"x-gateway-tags": f"{BATCH_TAG}={batch_id}"}
    turn: Turn | None = None
    with trace.activate():
        try:
            parse, answer = door(services)
            chat = limits.shape(parse(msgspec.json.encode(line.body), arrival, headers), runtime)
            trace.describe(chat)
            turn = Turn(chat, runtime, services, trace)
            result = await answer(turn)
        except GatewayError as exc:
            ledger.record_failure(services, trace, arrival, exc, turn, batch_id=batch_id)
            error = msgspec.Raw(exc.encode())
            return False, output_line(line, arrival.request_id, exc.status_code, error)
        except Exception:  # a bug must not stop the batch: the line fails, visibly
            log.exception("batch %s line %s failed", batch_id, line.custom_id)
            return False, failed_line(line, "internal_error", "The gateway failed on this line.")
    if not isinstance(result, Completed):  # lines are never streamed (checked on upload)
        await result.chunks.aclose()
        return False, failed_line(line, "invalid_request", "Lines cannot be streamed.")
    return True, output_line(line, arrival.request_id, 200, msgspec.Raw(result.body))
