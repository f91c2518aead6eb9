"""The throughput a separate local engine measured, read from its ``/metrics``: for a model
served by ``local-engine serve`` behind ``provider: openai_compatible`` (the compose and
Kubernetes deployments) and priced per GPU hour with ``throughput: measured``.

The engine exports the prefill and decode tokens per second of its busy time over the last
minute (``local_engine_prefill_tokens_per_second``, ``local_engine_decode_tokens_per_second``);
the gateway reads them every `INTERVAL_S` in the background, so a request's price never waits
on the scrape. Until the first read (and while the engine reports 0, having measured nothing)
the configured figures stand; an address that serves no such metrics (another server) keeps
them for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.providers.http import AIOHTTP_ERRORS

INTERVAL_S = 15.0
NAMES = ("local_engine_prefill_tokens_per_second", "local_engine_decode_tokens_per_second")
log = logging.getLogger(__name__)

Throughput = tuple[float | None, float | None]
"""Measured prefill and decode tokens per second; None where not measured yet."""


def metrics_url(base_url: str) -> str:
    """The engine's ``/metrics`` beside its OpenAI API (``http://host:8001/v1`` ->
    ``http://host:8001/metrics``)."""
    root = base_url.rstrip("/")
    return f"{root.removesuffix('/v1')}/metrics"


class EngineMeter:
    """The last figures read from one engine; reading starts with the first `throughput` call
    (on the event loop) and stops with `aclose`."""

    def __init__(
        self, url: str, session: aiohttp.ClientSession, interval_s: float = INTERVAL_S
    ) -> None:
        self._url = url
        self._session = session
        self._interval_s = interval_s
        self._last: Throughput = (None, None)
        self._task: asyncio.Task[None] | None = None

    def throughput(self) -> Throughput:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return self._last

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            try:
                self._last = await self._read()
            except (*AIOHTTP_ERRORS, TimeoutError, ValueError) as exc:
                log.debug("engine metrics at %s: %r", self._url, exc)
            await asyncio.sleep(self._interval_s)

    async def _read(self) -> Throughput:
        async with asyncio.timeout(5), self._session.get(self._url) as response:
            if response.status != 200:
                return self._last
            text = await response.text()
        found = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in NAMES
        }
        prefill, decode = (found.get(name) or None for name in NAMES)  # 0: nothing measured
        return prefill, decode
