"""The shadow stage: learning from the gateway's own traffic, after the response.

When the policy's ``shadow`` section samples a request that the router sent to the small model,
background work (never the request's path: the client's answer and latency do not change) sends
the same request to the large model (``shadow.to``) and asks a judge model (``shadow.judge``)
to grade both answers with `RUBRIC`. The two grades become a label in the labels store
(`gateway.labels_store`), beside what the difficulty head read for the request (its embedding
and dense features), so that ``gateway router train --from-ledger`` can fit the head on it.

Sampling is by a hash of the request id (a request is in or out whatever the replica), at the
tenant's rate (``shadow.tenants``, else ``shadow.rate``), while the tenant's shadow spend today
is under ``shadow.daily_budget_usd`` (checked before each comparison: the last one may pass it
by its own cost). Every extra call gets its own ledger record, route ``shadow``, with
``shadow_of`` set to the client's request id and a baseline of $0 (without the gateway there
would be no such call), so that reports show the spend apart; a failed call is recorded too.

With ``shadow.keep_features`` the features of every request the router judged are kept, not
only the sampled ones', so that client feedback (``POST /v1/feedback``) on any of them is a
label as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.labels_store import Sample, Verdict
from gateway.ml.classifier import features_of
from gateway.ml.head import dense_features
from gateway.ml.text import request_text
from gateway.pipeline import ledger
from gateway.pipeline.reply import Answer
from gateway.pipeline.turn import Turn
from gateway.policy.shadow import ShadowConfig
from gateway.providers import AttemptFailed, Usage

log = logging.getLogger(__name__)

RUBRIC = """You grade two answers, A and B, to the same request from a user.
Judge each answer on its own merits: is it correct, does it do what the request asks, is it
complete and clear? Length and style do not count unless the request asks for them.
Give each answer a whole-number grade from 1 (wrong or useless) to 10 (fully correct and
helpful). Reply with exactly two lines and nothing else:
A: <grade>
B: <grade>"""
"""The judge's fixed instructions. Which of A and B is the small model's answer (the one the
client got) is drawn per request (`small_first`), half and half, since judges favour one
position; the grades map to [0, 1] as ``(grade - 1) / 9``."""

_GRADE = re.compile(r"^\s*([AB])\s*[:=]\s*(10|[1-9])\b", re.MULTILINE)
_JUDGE_MAX_TOKENS = 16


@dataclass(frozen=True, slots=True)
class Grades:
    small: float
    large: float


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the shadow sample: a hash of its id below ``rate``."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"shadow:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def small_first(request_id: str) -> bool:
    """Whether the judge sees the small model's answer as A: a hash of the request id, so that
    each position holds the small answer for half the comparisons."""
    return hashlib.sha256(f"order:{request_id}".encode()).digest()[0] < 128


def consider(turn: Turn, model: str, answer: Answer) -> None:
    """After a successful answer from ``model``: keep the request's features and start a
    shadow comparison when the policy asks for them (background work only)."""
    shadow = turn.runtime.policy.shadow
    if turn.judgement is None or turn.understanding is None or shadow.to is None:
        return
    if model == shadow.to:
        return  # the large model answered: there is nothing to compare
    compare = sampled(turn.request.request_id, shadow.rate_for(turn.request.tenant))
    if compare or shadow.keep_features:
        turn.services.background.spawn(_shadow(turn, model, answer.text, compare))


def sample_of(turn: Turn, model: str) -> Sample:
    """What the head read for this request, to be stored beside its labels."""
    assert turn.judgement is not None and turn.understanding is not None
    request = turn.request
    features = features_of(request.body["messages"], request.has_tools)
    dense = dense_features(features.vector()[None, :], [features.text])[0]
    return Sample(
        request_id=request.request_id,
        tenant=request.tenant,
        time=request.arrived_unix,
        model=model,
        difficulty=turn.judgement.difficulty,
        vector=np.asarray(turn.understanding.vector, np.float32).tobytes(),
        dense=np.asarray(dense, np.float32).tobytes(),
    )


async def _shadow(turn: Turn, model: str, small_text: str, compare: bool) -> None:
    labels, shadow = turn.services.labels, turn.runtime.policy.shadow
    # the text features' regular expressions run off the event loop, as in the classify stage
    await labels.keep(await asyncio.to_thread(sample_of, turn, model))
    if not compare or not await _within_budget(turn, shadow):
        return
    assert shadow.to is not None and shadow.judge is not None  # the policy check sees to it
    request = turn.request
    body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
    large = await _call(turn, shadow.to, "large", body)
    if large is None:
        return
    first = small_first(request.request_id)
    judged = await _call(
        turn, shadow.judge, "judge", judge_body(request.body, small_text, large, first)
    )
    grades = None if judged is None else parse_grades(judged, first)
    if grades is None:
        if judged is not None:
            log.warning("request %s: the shadow judge's reply has no grades", request.request_id)
        return
    verdict = Verdict(
        large_model=shadow.to,
        judge=shadow.judge,
        small_score=grades.small,
        large_score=grades.large,
    )
    await labels.judged(request.request_id, verdict)


async def _within_budget(turn: Turn, shadow: ShadowConfig) -> bool:
    if shadow.daily_budget_usd is None:
        return True
    spent = await turn.services.labels.spend(turn.request.tenant, time.time())
    return spent < shadow.daily_budget_usd


async def _call(turn: Turn, model: str, role: str, body: dict[str, Any]) -> str | None:
    """One extra call, recorded in the ledger (and its cost in the shadow spend); its answer's
    text, or None when it failed."""
    request, services = turn.request, turn.services
    started = time.monotonic()
    try:
        reply = await turn.runtime.providers[model].complete(dict(body))
    except AttemptFailed as exc:
        log.warning(
            "request %s: shadow %s call to %s failed: %s",
            request.request_id,
            role,
            model,
            exc.message,
        )
        ledger.record_shadow(turn, role, model, None, status=exc.status or 502, started=started)
        return None
    answer = Answer.of_body(reply.body)
    usage = answer.usage or _estimated(body, answer.text)
    entry = ledger.record_shadow(
        turn, role, model, usage, started=started, estimated=answer.usage is None
    )
    if entry.cost_usd:
        await services.labels.add_spend(request.tenant, time.time(), entry.cost_usd)
    return answer.text


def _estimated(body: dict[str, Any], text: str) -> Usage:
    """The ledger's estimate (UTF-8 bytes / 4) when a provider sends no usage."""
    prompt = ledger.estimate_tokens(len(str(body.get("messages", "")).encode()))
    output = ledger.estimate_tokens(len(text.encode()))
    return Usage(prompt, output, prompt + output)


def judge_body(
    request_body: Mapping[str, Any], small: str, large: str, small_first: bool
) -> dict[str, Any]:
    """The judge's request: `RUBRIC`, the user's request (its last user message) and the two
    answers, the small model's as A when ``small_first``, else as B."""
    question = request_text(request_body.get("messages", []))
    a, b = (small, large) if small_first else (large, small)
    content = f"Request:\n{question}\n\n--- Answer A ---\n{a}\n\n--- Answer B ---\n{b}\n"
    return {
        "messages": [{"role": "system", "content": RUBRIC}, {"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": _JUDGE_MAX_TOKENS,
    }


def parse_grades(reply: str, small_first: bool) -> Grades | None:
    """The judge's two grades in [0, 1], given back to the small and large answers as
    `judge_body` placed them; None unless the reply names both."""
    found = {letter: (int(grade) - 1) / 9 for letter, grade in _GRADE.findall(reply)}
    if set(found) != {"A", "B"}:
        return None
    if small_first:
        return Grades(small=found["A"], large=found["B"])
    return Grades(small=found["B"], large=found["A"])
