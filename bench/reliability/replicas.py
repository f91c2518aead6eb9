"""Two replicas behind a load balancer, sharing one Redis (and, with ``--ledger-server``, one
PostgreSQL for the ledger).

Two gateways (same policy, own data folders and replica ids, one ``GATEWAY_REDIS_URL``) behind
nginx on 127.0.0.1 (round robin, keep-alive, the answering backend in ``x-replica``), in front of
`faulty_upstream.py` (healthy). The semantic cache is on, so each replica loads MiniLM at start.

- Tenants' limits, through the balancer, with unique prompts and ``Cache-Control: no-cache,
  no-store``: ``rl`` (``requests_per_minute``) gets twice its limit at 8 concurrent requests;
  ``cc`` (``max_concurrent_requests: 4``) sends 16 requests at once that the upstream holds 1 s
  (its most in flight is counted upstream); ``tpm`` (``tokens_per_minute``) and ``bud``
  (``daily_budget_usd``, a model priced so that one request costs about 3 % of the budget) send
  until refused, 4 at a time. Unshared counters would let each replica admit the whole limit,
  twice it in all; the overshoot past one limit is measured.
- Exact cache: a request answered by one replica (called directly), then the same request on
  the other with ``Cache-Control: no-store`` (a miss must not store there) until it is an exact
  hit; the time until the hit.
- Semantic cache: a question answered by one replica, then a paraphrase on the other
  (``no-store``), every 100 ms, until it is a semantic hit; the time since the first answer.
  Both at ``temperature: 0`` (the semantic cache stores nothing above its ``max_temperature``).
- Accounting: 200 requests through the balancer (half streamed, unique prompts, no cache),
  priced by this script from each answer's usage at the policy's prices; the cost report (over
  both replicas, by a tag of this run) must equal that sum exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import stack
from client import Outcome, body, chat
from faulty_upstream import answer_for
from report import Checks, header, log, table

from gateway.ledger.postgres_schema import upgrade

NO_CACHE = {"Cache-Control": "no-cache, no-store"}
NO_STORE = {"Cache-Control": "no-store"}
PAIRS = [
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?"),
    ("What is the capital city of France?", "What's the capital city of France?"),
    ("Can you explain what a hash table is?", "Please explain what a hash table is."),
    ("How do I sort a dict by value in Python?", "How to sort a dict by value in Python?"),
    ("What are the benefits of unit testing?", "What are the advantages of unit testing?"),
]  # fmt: skip


def policy(upstream: str, args: argparse.Namespace) -> str:
    return f"""version: 1
models:
  mock:
    provider: openai_compatible
    base_url: {upstream}/v1
    model: mock-model
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  pricey:
    provider: openai_compatible
    base_url: {upstream}/v1
    model: mock-model
    price: {{input_per_mtok: 1000, output_per_mtok: 1000}}
baseline_model: mock
routes:
  - {{name: default, to: mock}}
tenants:
  bench: {{api_keys: ["${{BENCH_TENANT_KEY}}"]}}
  rl:
    api_keys: ["${{BENCH_KEY_RL}}"]
    limits: {{requests_per_minute: {args.rpm}}}
  cc:
    api_keys: ["${{BENCH_KEY_CC}}"]
    limits: {{max_concurrent_requests: 4}}
  tpm:
    api_keys: ["${{BENCH_KEY_TPM}}"]
    limits: {{tokens_per_minute: {args.tpm}}}
  bud:
    api_keys: ["${{BENCH_KEY_BUD}}"]
    daily_budget_usd: {args.budget_usd}
    on_budget_exceeded: reject
admin: {{api_keys: ["${{BENCH_ADMIN_KEY}}"]}}
cache:
  semantic: {{enabled: true}}
"""


async def burst(
    url: str,
    tenant: str,
    n: int,
    conc: int,
    prompt: str,
    model: str = "mock",
    stop_after_refusals: int | None = None,
) -> list[Outcome]:
    """``n`` requests of a tenant, ``conc`` at a time; stop early after that many 429s."""
    sem = asyncio.Semaphore(conc)
    refused = 0
    key = stack.KEYS[tenant]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> Outcome | None:
            nonlocal refused
            async with sem:
                if stop_after_refusals is not None and refused >= stop_after_refusals:
                    return None
                out = Outcome(i, tenant, prompt.format(i=i), False, False)
                await chat(session, url, out, f"run={tenant}", 30, key, NO_CACHE, model)
                refused += out.status == 429
                return out

        done = await asyncio.gather(*(one(i) for i in range(n)))
        return [o for o in done if o is not None]


def split(outs: list[Outcome]) -> str:
    ok = Counter((o.replica or "?").rsplit(":", 1)[-1] for o in outs if o.status == 200)
    return " + ".join(f"{n} via :{port}" for port, n in sorted(ok.items()))


async def limits(lb: str, up: str, args: argparse.Namespace) -> tuple[list[list[str]], Checks]:
    rows, checks = [], Checks()

    rl = await burst(lb, "rl", 2 * args.rpm, 8, "[t=rl] rate limit request {i}")
    ok = sum(o.status == 200 for o in rl)
    codes = Counter(f"{o.status} {o.code or ''}".strip() for o in rl)
    rows.append(
        [
            f"rl: requests_per_minute {args.rpm}", f"{len(rl)} at 8 at once",
            f"{ok} ({split(rl)})", f"{ok - args.rpm:+d} requests", str(dict(codes)),
        ]
    )  # fmt: skip
    checks.add(
        args.rpm * 0.95 <= ok <= args.rpm,
        "rl: requests per minute held across replicas (admitted <= limit, >= 95 % of it)",
        f"{ok} admitted of {len(rl)}, limit {args.rpm}",
    )

    stack.control(up, mode="ok", reset=True)
    cc = await burst(lb, "cc", 16, 16, "[slow=1] [t=cc] concurrent request {i}")
    ok = sum(o.status == 200 for o in cc)
    inflight = stack.upstream_stats(up)["max_inflight"].get("cc", 0)
    codes = Counter(f"{o.status} {o.code or ''}".strip() for o in cc)
    rows.append(
        [
            "cc: max_concurrent_requests 4", "16 at once, each held 1 s upstream",
            f"{ok} ({split(cc)})", f"{inflight - 4:+d} in flight (upstream saw {inflight})",
            str(dict(codes)),
        ]
    )  # fmt: skip
    checks.add(
        1 <= inflight <= 4 and ok <= 4,
        "cc: concurrent requests held across replicas (<= 4 at the upstream)",
        f"{ok} admitted, {inflight} at once upstream",
    )

    tpm = await burst(lb, "tpm", 200, 4, "[t=tpm] tokens request {i}", stop_after_refusals=8)
    await asyncio.sleep(1)  # the report flushes the replica it reaches; the other flushes in 50 ms
    rep = stack.cost_report(lb, since="1d", tenant="tpm")["totals"]
    tokens = int(rep["input_tokens"]) + int(rep["output_tokens"])
    ok = sum(o.status == 200 for o in tpm)
    per = tokens / ok if ok else 0
    rows.append(
        [
            f"tpm: tokens_per_minute {args.tpm}", "until refused, 4 at once",
            f"{ok} requests, {tokens} tokens ({split(tpm)})",
            f"{tokens - args.tpm:+d} tokens ({(tokens - args.tpm) / per:+.1f} requests of "
            f"{per:.0f})" if per else "–",
            str(dict(Counter(f"{o.status} {o.code or ''}".strip() for o in tpm))),
        ]
    )  # fmt: skip
    checks.add(
        args.tpm <= tokens < 2 * args.tpm,
        "tpm: tokens per minute shared (admitted < 2x the limit, what unshared replicas allow)",
        f"{tokens} tokens admitted, limit {args.tpm}",
    )

    bud = await burst(
        lb, "bud", 200, 4, "[t=bud] budget request {i}", "pricey", stop_after_refusals=8
    )
    await asyncio.sleep(1)
    rep = stack.cost_report(lb, since="1d", tenant="bud")["totals"]
    spent = float(rep["cost_usd"])
    ok = sum(o.status == 200 for o in bud)
    per = spent / ok if ok else 0
    rows.append(
        [
            f"bud: daily_budget_usd {args.budget_usd:g}", "until refused, 4 at once",
            f"{ok} requests, ${spent:.4f} ({split(bud)})",
            f"${spent - args.budget_usd:+.4f} ({(spent - args.budget_usd) / per:+.1f} requests "
            f"of ${per:.4f})" if per else "–",
            str(dict(Counter(f"{o.status} {o.code or ''}".strip() for o in bud))),
        ]
    )  # fmt: skip
    checks.add(
        args.budget_usd <= spent < 2 * args.budget_usd,
        "bud: daily budget shared (spent < 2x the budget, what unshared replicas allow)",
        f"${spent:.4f} spent, budget ${args.budget_usd:g}",
    )
    return rows, checks


async def until_hit(
    session: aiohttp.ClientSession,
    gw: str,
    prompt: str,
    stream: bool,
    kind: str,
    t0: float,
    expect: str | None = None,
) -> tuple[float | None, Outcome]:
    """Poll ``gw`` with ``prompt`` (no-store) until its cache says ``kind`` with the complete
    answer ``expect``; seconds since t0."""
    out = Outcome(0, "poll", prompt, stream, False)
    while time.monotonic() - t0 < 5:
        out = Outcome(0, "poll", prompt, stream, False, expect=expect)
        await chat(session, gw, out, "run=cache-poll", 30, headers=NO_STORE, temperature=0)
        if out.cache == kind and out.kind == "ok":
            return time.monotonic() - t0, out
        await asyncio.sleep(0.05 if kind == "exact" else 0.1)
    return None, out


async def caches(gws: list[stack.Gateway], run_id: str) -> tuple[list[list[str]], Checks]:
    rows, checks = [], Checks()
    exact: list[float | None] = []
    sem: list[float | None] = []
    sem_notes: list[str] = []
    async with aiohttp.ClientSession() as session:
        for i in range(10):
            a, b = (gws[0], gws[1]) if i % 2 == 0 else (gws[1], gws[0])
            prompt = f"[{run_id}] exact cache sharing question {i}"
            first = Outcome(i, "first", prompt, i % 4 >= 2, False)
            await chat(session, a.url, first, "run=cache", temperature=0)
            t0 = time.monotonic()
            dt, _ = await until_hit(session, b.url, prompt, not first.stream, "exact", t0)
            exact.append(dt if first.kind == "ok" and first.cache == "miss" else None)
        for i, (p, q) in enumerate(PAIRS):
            a, b = (gws[0], gws[1]) if i % 2 == 0 else (gws[1], gws[0])
            first = Outcome(i, "first", p, False, False)
            await chat(session, a.url, first, "run=cache", temperature=0)
            t0 = time.monotonic()
            dt, last = await until_hit(session, b.url, q, False, "semantic", t0, answer_for(p))
            sem.append(dt if first.kind == "ok" else None)
            if dt is None:  # the pair itself, on the replica that stored it
                own = Outcome(i, "own", q, False, False, expect=answer_for(p))
                await chat(session, a.url, own, "run=cache-poll", headers=NO_STORE, temperature=0)
                sem_notes.append(f"{q!r}: {last.cache} on the other, {own.cache} on its own")
            else:
                sem_notes.append(f"{q!r}: score {last.score}, after {dt * 1000:.0f} ms")

    def fmt(vals: list[float | None]) -> str:
        got = sorted(v for v in vals if v is not None)
        if not got:
            return "none"
        return f"{len(got)}/{len(vals)} hit; {got[0] * 1000:.0f} / {got[-1] * 1000:.0f} ms"

    rows.append(["exact cache: answered on one, then the same on the other", fmt(exact)])
    rows.append(["semantic cache: answered on one, then a paraphrase on the other", fmt(sem)])
    checks.add(
        all(v is not None for v in exact),
        "exact cache shared: an answer from one replica is an exact hit on the other",
        fmt(exact),
    )
    checks.add(
        all(v is not None and v <= 1.0 for v in sem),
        "semantic entry made on one replica hits on the other within 1 s",
        fmt(sem),
    )
    for note in sem_notes:
        log(f"semantic: {note}")
    return rows, checks


PRICE_PER_MTOK = {"input": Decimal("1.0"), "output": Decimal("2.0")}
"""The ``mock`` model's price in `policy`."""


async def accounting(lb: str, run_id: str, n: int = 200) -> tuple[list[list[str]], Checks]:
    """``n`` requests through the balancer, half streamed; the report must sum what they cost."""
    tag = f"acct=r{run_id}"
    headers = {"Authorization": f"Bearer {stack.TENANT_KEY}", "x-gateway-tags": tag} | NO_CACHE
    sem = asyncio.Semaphore(16)
    replicas: Counter[str] = Counter()
    chat_url = f"{lb}/v1/chat/completions"

    async def one(session: aiohttp.ClientSession, i: int) -> dict[str, Any] | None:
        stream = i % 2 == 1
        payload = body(f"accounting {run_id} question {i}", stream)
        async with sem, session.post(chat_url, json=payload, headers=headers) as r:
            if r.status != 200:
                return None
            replicas[r.headers.get("x-replica", "?")] += 1
            if not stream:
                usage: dict[str, Any] = (await r.json())["usage"]
                return usage
            found = None
            async for raw in r.content:
                line = raw.strip()
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    found = json.loads(line[5:]).get("usage") or found
            return found

    async with aiohttp.ClientSession() as session:
        usages = await asyncio.gather(*(one(session, i) for i in range(n)))
    priced = [u for u in usages if u]
    expected = sum(
        (
            Decimal(u["prompt_tokens"]) * PRICE_PER_MTOK["input"]
            + Decimal(u["completion_tokens"]) * PRICE_PER_MTOK["output"]
            for u in priced
        ),
        Decimal(0),
    ) / Decimal(1_000_000)
    await asyncio.sleep(1)  # the report flushes the replica it reaches; the other, in 50 ms
    totals = stack.cost_report(lb, since="1d", tag=tag)["totals"]
    reported = Decimal(totals["cost_usd"] or "0")
    split = " + ".join(f"{count} via :{port}" for port, count in sorted(replicas.items()))
    checks = Checks()
    checks.add(
        len(priced) == n and totals["requests"] == n and reported == expected,
        "the cost report over both replicas equals what the clients' answers cost, exactly",
        f"{totals['requests']} requests, ${reported} reported, ${expected} from usage",
    )
    rows = [[f"{n} requests, half streamed ({split})", f"${expected}", f"${reported}"]]
    return rows, checks


def _ledger_database(server: str, run_id: str) -> str:
    """A new database on ``server`` for the replicas' ledger, with its tables."""
    name = f"gw_bench_replicas_{run_id}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    upgrade(f"{server}/{name}")
    return f"{server}/{name}"


def run(args: argparse.Namespace, tmp: Path, procs: stack.Procs) -> tuple[str, Checks]:
    store = "one PostgreSQL for the ledger" if args.ledger_server else "the ledger in Redis"
    head = header(f"two replicas behind nginx, one Redis, {store}")
    _, redis_port = stack.start_redis(procs, tmp)
    _, up = stack.start_upstream(procs, tmp)
    url = f"redis://127.0.0.1:{redis_port}/0"
    text = policy(up, args)
    run_id = time.strftime("%H%M%S")
    ledger = _ledger_database(args.ledger_server, run_id) if args.ledger_server else None
    gws = [
        stack.start_gateway(procs, tmp, f"replica-{n}", text, redis_url=url, ledger_url=ledger)
        for n in (1, 2)
    ]
    t0 = time.monotonic()
    for gw in gws:
        stack.wait_ready(gw, 300)
    log(f"both replicas ready in {time.monotonic() - t0:.0f} s (MiniLM loads at start)")
    _, lb_port = stack.start_balancer(procs, tmp, [gw.port for gw in gws])
    lb = f"http://127.0.0.1:{lb_port}"

    lim_rows, checks = asyncio.run(limits(lb, up, args))
    cache_rows, cache_checks = asyncio.run(caches(gws, run_id))
    acct_rows, acct_checks = asyncio.run(accounting(lb, run_id))
    checks.lines += cache_checks.lines + acct_checks.lines
    md = (
        f"{head}\nTwo gateways (ports {gws[0].port}, {gws[1].port}) behind nginx round robin "
        f"(port {lb_port}), one redis-server, {store}; limits checked through the "
        "balancer.\n\n"
        + table(
            ["tenant and limit", "sent", "admitted (by replica)", "past the limit", "statuses"],
            lim_rows,
            "lllll",
        )
        + "\n\n"
        + table(["cache", "hits on the other replica; first / last hit after"], cache_rows, "ll")
        + "\n\n"
        + table(["accounting", "cost from the answers' usage", "cost report"], acct_rows, "lrr")
    )
    return md, checks
