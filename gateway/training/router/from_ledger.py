"""Calibration prompts from the ledger: the requests the gateway actually routed.

Every request the classifier scored has its difficulty, category and token counts in the
ledger, so ``gateway router calibrate --from-ledger`` can set a threshold from real traffic
without a prompt file (and without prompt text, which the ledger never holds). Cache hits, failed
requests and requests for a named model were not routed by difficulty and are left out. The
ledger does not know whether a request had tools or images: rules that test those are taken as
not matching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import open_ledger
from gateway.settings import Settings
from gateway.training.router.calibrate import Prompt


def routed(records: Iterable[LedgerRecord]) -> list[Prompt]:
    return [
        Prompt(
            difficulty=r.difficulty,
            category=r.category or "other",
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            prompt_tokens_estimate=r.input_tokens,
        )
        for r in records
        if r.difficulty is not None and r.status == 200 and r.cache in ("miss", "bypass")
    ]


def ledger_prompts(settings: Settings, since: float, until: float) -> list[Prompt]:
    """The routed requests of ``[since, until)`` in the ledger the settings point at."""

    async def scan() -> list[Prompt]:
        ledger = open_ledger(settings.redis_url, settings.data_dir, ledger_url=settings.ledger_url)
        try:  # page by page: only the few fields calibration reads are kept
            return [prompt async for page in ledger.scan(since, until) for prompt in routed(page)]
        finally:
            await ledger.aclose()

    return asyncio.run(scan())
