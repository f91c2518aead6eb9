"""What the collector asks of a provider's batch API, and what one answers: one small
protocol (`BatchApi`: submit, poll, cancel) with one adapter per provider kind, so the
collector never knows a wire format.

A line's custom id upstream is its index in the gateway batch (a string): unique in the batch,
within every provider's custom id rules, and the way back to the line. An adapter translates
each line's result into the gateway's terms: a `Reply` holding a ``chat.completion`` (what the
provider's live call would have returned), or a `LineFailed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgspec

from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed, Reply
from gateway.providers.http import attempt, raise_for_status

FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
"""An upstream batch's statuses after which nothing changes (OpenAI's words; each adapter
maps its provider's to these)."""


@dataclass(frozen=True, slots=True)
class LineFailed:
    """A line the upstream batch did not answer with a 2xx."""

    status: int
    """The upstream's status for the line (502 when it gave none: an expired line)."""
    code: str
    message: str
    body: dict[str, Any] | None = None
    """The upstream's error body, passed on when the line itself was at fault (a 400)."""


Result = Reply | LineFailed | None
"""A line's answer, its failure, or None: not sent upstream (a group under the model's
``batch_api.min_lines``), so the line is called as a live request is."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """An upstream batch that has ended: its final status and the results it has; a line
    without a result ran out of the batch's time, or was cancelled."""

    status: str
    results: dict[str, Result]


class BatchApi(Protocol):
    def request(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any] | LineFailed:
        """A line of the upstream batch for a chat body (the body the live call would send),
        or why the provider cannot take it (the line fails alone)."""

    async def submit(self, requests: list[dict[str, Any]]) -> str:
        """Send the lines as one upstream batch; its upstream id. Raises `AttemptFailed`."""

    async def poll(self, upstream_id: str) -> Outcome | None:
        """The batch's outcome once it has ended, else None. Raises `AttemptFailed`."""

    async def cancel(self, upstream_id: str) -> None:
        """Ask the upstream to cancel the batch (its lines done so far stay answered)."""

    async def aclose(self) -> None: ...


class JsonClient:
    """One pooled session to a provider's batch endpoints, with the model's headers; every
    exchange bounded by the model's ``total_s``, and every failure an `AttemptFailed`."""

    def __init__(self, config: ModelConfig, headers: Mapping[str, str]) -> None:
        t = config.timeouts
        self._session = aiohttp.ClientSession(
            headers={**headers, **config.headers},
            timeout=aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s),
        )

    async def read(self, method: str, url: str, **kwargs: Any) -> bytes:
        with attempt(f"{method} {url}"):
            async with self._session.request(method, url, **kwargs) as response:
                await raise_for_status(response)
                return await response.read()

    async def json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return json_object(await self.read(method, url, **kwargs), f"{method} {url}")

    async def aclose(self) -> None:
        await self._session.close()


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A response body that must be one JSON object; `AttemptFailed` otherwise."""
    try:
        found = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise AttemptFailed("protocol", f"{what}: not JSON: {exc}") from exc
    if not isinstance(found, dict):
        raise AttemptFailed("protocol", f"{what}: not a JSON object")
    return found


async def read_jsonl(raw: bytes) -> list[dict[str, Any]]:
    """`jsonl` on a worker thread: a results file of 50,000 lines takes a while to decode, and
    the event loop serves live requests meanwhile."""
    return await asyncio.to_thread(jsonl, raw)


async def write_jsonl(records: list[dict[str, Any]]) -> bytes:
    """The records as a JSONL body, encoded on a worker thread (as `read_jsonl`)."""
    return await asyncio.to_thread(
        lambda: b"".join(msgspec.json.encode(record) + b"\n" for record in records)
    )


def jsonl(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL body (blank lines skipped); `AttemptFailed` if garbled."""
    try:
        found = [msgspec.json.decode(line) for line in raw.splitlines() if line.strip()]
    except msgspec.DecodeError as exc:
        raise AttemptFailed("protocol", f"an unreadable results line: {exc}") from exc
    if not all(isinstance(item, dict) for item in found):
        raise AttemptFailed("protocol", "a results line is not a JSON object")
    return found
