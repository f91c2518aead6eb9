"""Faults during load: one gateway on a Redis the bench starts (exact cache and ledger in it),
in front of `faulty_upstream.py`, under a steady open-loop load (``--rate`` requests a second,
half streamed; ``--abandon`` of the streams are left by the client after their first chunk; a
third of the prompts come from a small pool, so answers are stored and replayed from the cache
while the faults happen).

Phases of ``--phase-seconds`` each, in order: healthy; Redis killed (SIGKILL); Redis restarted
on the same port (append-only file, fsync always, so it comes back with its data); the upstream
answering 500; hanging past the gateway's timeout; cutting streams and bodies mid-way; healthy
again. ``--share`` of the upstream's answers meet its fault.

Checks:
- every request ends as a complete answer, a clean OpenAI-shaped error (status and body, or an
  error event closing a stream) or a stream the client left; a client timeout (20 s, beyond
  the gateway's own timeouts and retries) is a failure;
- no partial answer is cached: afterwards every distinct prompt is sent again, cache on, and
  must come back complete (an exact hit or a miss);
- the ledger counts every request sent: the admin report's ``requests`` for the run's tag, and
  the records in Redis's ledger stream matched by ``x-gateway-request-id`` (0 lost, 0 doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import redis
import stack
from client import Outcome, chat
from report import Checks, header, log, table

PHASES = [
    ("healthy", None),
    ("Redis killed", "kill_redis"),
    ("Redis restarted", "start_redis"),
    ("upstream 500s", "5xx"),
    ("upstream hangs", "hang"),
    ("upstream cuts streams and bodies", "drop"),
    ("healthy again", "ok"),
]
POOL = 24  # prompts that repeat, so the cache stores and answers during the faults


def policy(upstream: str) -> str:
    return f"""version: 1
models:
  mock:
    provider: openai_compatible
    base_url: {upstream}/v1
    model: mock-model
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
    timeouts: {{connect_s: 1, first_token_s: 1, total_s: 4}}
    retries: {{max_attempts: 2, budget_s: 4, backoff_initial_s: 0.05, backoff_max_s: 0.2}}
baseline_model: mock
routes:
  - {{name: default, to: mock}}
tenants:
  bench: {{api_keys: ["${{BENCH_TENANT_KEY}}"]}}
admin: {{api_keys: ["${{BENCH_ADMIN_KEY}}"]}}
"""


class Faults:
    def __init__(self, args: argparse.Namespace, tmp: Path, procs: stack.Procs) -> None:
        self.args, self.tmp, self.procs = args, tmp, procs
        self.redis, self.redis_port = stack.start_redis(procs, tmp)
        self.up_proc, self.up = stack.start_upstream(procs, tmp)
        url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.gw = stack.start_gateway(procs, tmp, "gateway", policy(self.up), redis_url=url)
        stack.wait_ready(self.gw, 90)
        self.run_id = uuid.uuid4().hex[:8]
        self.tag = f"run=faults-{self.run_id}"
        self.phase = PHASES[0][0]
        self.tagged: set[str] = set()

    async def act(self, action: str | None) -> None:
        if action == "kill_redis":
            stack.kill9(self.redis)
            self.procs.items.remove(self.redis)
        elif action == "start_redis":  # started on this thread, waited for on another
            self.redis, port = stack.start_redis(self.procs, self.tmp, self.redis_port, False)
            log_file = self.tmp / "redis.log"
            await asyncio.to_thread(stack.wait_port, port, self.redis, 20, "redis", log_file)
        elif action is not None:
            await asyncio.to_thread(stack.control, self.up, mode=action, share=self.args.share)

    async def load(self) -> list[Outcome]:
        rng = random.Random(13)
        tasks: list[asyncio.Task[Outcome]] = []
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def phases() -> None:
                for name, action in PHASES:
                    await self.act(action)
                    self.phase = name
                    log(f"phase: {name}")
                    await asyncio.sleep(self.args.phase_seconds)

            driver = asyncio.create_task(phases())
            t0, i = time.monotonic(), 0
            while not driver.done():
                stream = rng.random() < 0.5
                if rng.random() < 1 / 3:
                    prompt = f"[{self.run_id}] pooled question {rng.randrange(POOL)}"
                else:
                    prompt = f"[{self.run_id}] unique question {i}"
                abandon = stream and rng.random() < self.args.abandon
                out = Outcome(i, self.phase, prompt, stream, abandon)
                tasks.append(asyncio.create_task(chat(session, self.gw.url, out, self.tag)))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i / self.args.rate - time.monotonic()))
            await driver
            return list(await asyncio.gather(*tasks))

    async def replay(self, prompts: dict[str, bool]) -> list[Outcome]:
        """Every distinct prompt again, cache on, 16 at a time."""
        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession() as session:

            async def one(i: int, prompt: str, stream: bool) -> Outcome:
                async with sem:
                    out = Outcome(i, "replay", prompt, stream, False)
                    return await chat(session, self.gw.url, out, f"run=replay-{self.run_id}")

            jobs = [one(i, p, s) for i, (p, s) in enumerate(prompts.items())]
            return list(await asyncio.gather(*jobs))

    def ledger_ids(self) -> Counter[str]:
        """Request ids of every record in the Redis ledger's stream, whatever its tags."""
        r = redis.Redis(port=self.redis_port)
        ids: Counter[str] = Counter()
        last = "-"
        while True:
            page = r.xrange("gateway:ledger:stream", min=last, count=5000)
            for entry_id, fields in page:
                if entry_id.decode() != last:
                    rec = json.loads(fields[b"r"])
                    ids[rec["request_id"]] += 1
                    if (rec.get("tags") or {}).get("run") == self.tag.split("=", 1)[1]:
                        self.tagged.add(rec["request_id"])
            if len(page) < 5000:
                break
            last = page[-1][0].decode()
        r.close()
        return ids


def run(args: argparse.Namespace, tmp: Path, procs: stack.Procs) -> tuple[str, Checks]:
    head = header("faults during load")
    f = Faults(args, tmp, procs)
    outcomes = asyncio.run(f.load())
    sent = len(outcomes)
    log(f"{sent} requests sent; replaying the distinct prompts")
    stack.control(f.up, mode="ok")
    firsts: dict[str, bool] = {}
    for o in outcomes:
        firsts.setdefault(o.prompt, o.stream)
    replays = asyncio.run(f.replay(firsts))

    expected_all = sent + len(replays) + 1  # and the readiness check's request
    deadline, total = time.monotonic() + 60, -1
    while time.monotonic() < deadline:  # the spool written while Redis was down replays
        total = int(stack.cost_report(f.gw.url, since="1d")["totals"]["requests"])
        if total >= expected_all:
            break
        time.sleep(2)
    recorded = int(stack.cost_report(f.gw.url, since="1d", tag=f.tag)["totals"]["requests"])
    ids = f.ledger_ids()
    seen = Counter(o.request_id for o in outcomes + replays if o.request_id)
    lost = [i for i in seen if i not in ids]
    doubled = [i for i, n in ids.items() if n > 1]
    extra = len(ids) - len(seen) - 1
    no_id = sum(1 for o in outcomes if not o.request_id)
    untagged = Counter(
        f"{o.status} {'stream' if o.stream else 'non-stream'}"
        for o in outcomes
        if o.request_id in ids and o.request_id not in f.tagged
    )
    (tmp / "outcomes.json").write_text(json.dumps([vars(o) for o in outcomes + replays]))

    rows = []
    for name, _ in PHASES:
        ph = [o for o in outcomes if o.phase == name]
        kinds = Counter(o.kind for o in ph)
        codes = Counter(f"{o.status} {o.code}" for o in ph if o.kind == "error")
        lat = sorted(o.latency_s for o in ph if o.kind != "abandoned")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
        cache = Counter(o.cache for o in ph if o.kind == "ok")
        rows.append(
            [
                name, str(len(ph)), str(kinds["ok"]), str(kinds["error"]), str(kinds["abandoned"]),
                str(kinds["FAIL"]), ", ".join(f"{k}: {n}" for k, n in codes.most_common()) or "–",
                ", ".join(f"{k}: {n}" for k, n in sorted(cache.items(), key=str)) or "–",
                f"{p99:,.0f}", f"{max(lat) * 1000 if lat else 0:,.0f}",
            ]
        )  # fmt: skip
    head_cols = ["phase", "sent", "complete", "clean error", "client left", "failed"]
    head_cols += ["errors (status code)", "x-gateway-cache of answers", "p99 ms", "max ms"]
    fails = [o for o in outcomes if o.kind == "FAIL"]
    bad_replays = [o for o in replays if o.kind != "ok"]
    rc = Counter(o.cache for o in replays)
    faulted = {o.prompt for o in outcomes if o.kind != "ok"}
    hits_after_fault = sum(1 for o in replays if o.prompt in faulted and o.cache == "exact")
    stats = stack.upstream_stats(f.up)
    md = (
        f"{head}\nLoad: {args.rate:g} requests/s open loop, half streamed, {args.abandon:.0%} of "
        f"streams left by the client after the first chunk, {args.phase_seconds:g} s per phase; "
        f"upstream faults hit {args.share:.0%} of its answers; gateway timeouts first token 1 s, "
        f"total 4 s, 2 attempts; client timeout 20 s. Upstream answers by fault: "
        f"{stats['counts']}.\n\n"
        + table(head_cols, rows, "l")
        + f"\n\nReplay of the {len(firsts):,} distinct prompts with the cache on: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(rc.items(), key=str))
        + f"; {hits_after_fault} exact hits on prompts whose first request failed, was cut or "
        f"left; {len(bad_replays)} not complete.\n\nLedger: the report counts {total:,} requests "
        f"in all for {expected_all:,} sent (load, replay, readiness check), {recorded:,} under "
        f"the load's tag `{f.tag}` for {sent:,}; Redis stream: {sum(ids.values()):,} records, "
        f"{len(lost)} request ids lost, {len(doubled)} doubled, {extra} not seen by the client "
        f"({no_id} requests got no id: no response head)."
    )
    if untagged:
        md += (
            " Records without the request's `x-gateway-tags` (so outside the tag's report), by "
            "status: " + ", ".join(f"{k}: {n}" for k, n in untagged.most_common())
        )
    for o in (fails + bad_replays)[:10]:
        md += f"\n- {o.phase} #{o.i} stream={o.stream} status={o.status}: {o.detail}"
    checks = Checks()
    checks.add(
        not fails,
        "every request: complete answer or clean OpenAI-shaped error (no hang)",
        f"{len(fails)} failed of {sent:,}",
    )
    checks.add(
        not bad_replays,
        "no partial answer cached (replay: complete, exact hit or miss)",
        f"{len(bad_replays)} bad of {len(replays):,}",
    )
    checks.add(
        total == expected_all,
        "ledger report: requests == requests sent",
        f"{total:,} / {expected_all:,}",
    )
    checks.add(
        not lost and not doubled and sum(ids.values()) == expected_all,
        "ledger records matched by x-gateway-request-id: 0 lost, 0 doubled",
        f"{len(lost)} lost, {len(doubled)} doubled, {sum(ids.values()):,} records",
    )
    checks.add(
        recorded == sent,
        "ledger report for the load's tag == requests sent with it",
        f"{recorded:,} / {sent:,}",
    )
    return md, checks
