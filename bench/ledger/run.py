#!/usr/bin/env python3
"""Ledger benchmark: the request-path cost of `Ledger.record`, and reports over 1M records.

    python bench/ledger/run.py [--records 1000000] [--redis redis://127.0.0.1:6379/0]
                               [--redis-records 1000000] [--skip-redis] [--out DIR]
                               [--postgres postgresql://postgres@127.0.0.1:5432]
                               [--postgres-records 10000000] [--skip-postgres]
                               [--postgres-database gw_bench_ledger] [--json FILE]

1. ``record()``: p50/p99 of one call on a running ledger (writer task batching in the
   background on the same event loop), SQLite and Redis, and the rate at which the writer
   stores records.
2. Builds a SQLite ledger of ``--records`` records spread over the last 30 days, written in
   time order as a gateway writes them (4 tenants, 4 models, 5 routes, 4 cache outcomes, 0-2
   tags each) under ``--out`` (default
   bench/results/ledger, git-ignored), then times reports over it: in process, and as a user
   runs it (``python -m gateway report --since 7d``, a fresh process, start-up
   included). For comparison, the same report summed from the raw records without rollups.
3. The same records into Redis (own key prefix, deleted at the end) and the same reports from
   its rollups.
4. The same records into PostgreSQL (``--postgres``, a server URL: the run creates the database
   ``gw_bench_ledger`` there, applies the migrations, and leaves it for ``--reuse``), and the
   same reports from its rollups, in process and through the CLI.

Prints a markdown table; bench/ledger/RESULTS.md holds the figures of the last run on record.
``--json FILE`` also writes the PostgreSQL figures (write rate, database size, report times) for
the capacity model (bench/capacity/model.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from gateway.ledger import LedgerRecord, open_ledger, postgres_schema, sqlite_schema  # noqa: E402
from gateway.ledger.postgres_store import PostgresLedger  # noqa: E402
from gateway.ledger.redis_store import RedisLedger  # noqa: E402
from gateway.ledger.sql_queries import ReportQuery  # noqa: E402
from gateway.ledger.sqlite_store import SQLiteLedger  # noqa: E402

DAY = 86_400
MODELS = {  # input, output $/Mtok
    "local-small": (Decimal("0.02"), Decimal("0.02")),
    "mini": (Decimal("0.15"), Decimal("0.60")),
    "large": (Decimal("2.50"), Decimal("10")),
    "unpriced": None,
}
ROUTES = ["default", "hard-to-large", "code-to-large", "cache", "forced"]
TENANTS = ["team-a", "team-b", "team-c", "team-d"]
CACHES = ["miss"] * 7 + ["exact", "semantic", "bypass"]


def make_records(
    n: int, now: float, seed: int = 7, first: int = 0, total: int | None = None
) -> list[LedgerRecord]:
    """Records ``first`` to ``first + n`` of ``total`` over the 30 days before ``now``, in time
    order as a gateway writes them (or at random times when ``total`` is None)."""
    rnd = random.Random(seed)
    out = []
    names = list(MODELS)
    for i in range(n):
        model = rnd.choice(names)
        if total is None:
            t = now - rnd.random() * 30 * DAY
        else:
            t = now - 30 * DAY + (first + i + rnd.random()) * 30 * DAY / total
        cache = rnd.choice(CACHES)
        tin, tout = rnd.randint(20, 4000), rnd.randint(5, 800)
        price = MODELS[model]
        large = MODELS["large"]
        assert large is not None
        baseline = (tin * large[0] + tout * large[1]) / 1_000_000
        if cache in ("exact", "semantic"):
            cost: Decimal | None = Decimal(0)
        elif price is None:
            cost = None
        else:
            cost = (tin * price[0] + tout * price[1]) / 1_000_000
        tags = {}
        if rnd.random() < 0.5:
            tags["app"] = rnd.choice(["chat", "search", "agent"])
        if rnd.random() < 0.2:
            tags["env"] = rnd.choice(["prod", "staging"])
        out.append(
            LedgerRecord(
                time=t,
                request_id=uuid.UUID(int=rnd.getrandbits(128)).hex,
                tenant=rnd.choice(TENANTS),
                tags=tags,
                route="cache" if cache in ("exact", "semantic") else rnd.choice(ROUTES),
                model=model,
                cache=cache,  # type: ignore[arg-type]
                input_tokens=tin,
                output_tokens=tout,
                cost_usd=cost,
                baseline_cost_usd=baseline,
                latency_ms=rnd.random() * 2000,
            )
        )
    return out


async def bench_record(ledger_factory: object, n: int) -> dict[str, float]:
    ledger = ledger_factory()  # type: ignore[operator]
    await ledger.start()
    records = make_records(n, time.time(), seed=1)
    samples = []
    started = time.perf_counter()
    for i, record in enumerate(records):
        t = time.perf_counter_ns()
        ledger.record(record)
        samples.append(time.perf_counter_ns() - t)
        if i % 50 == 49:
            await asyncio.sleep(0)  # a request's worth of other work: let the writer run
    await ledger.flush(timeout_s=120)
    elapsed = time.perf_counter() - started
    await ledger.aclose()
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "stored_per_s": n / elapsed,
    }


def timed(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


REPORTS = [
    ("--since 7d --by model", 7, ("model",), None),
    ("--since 30d --by day,model", 30, ("day", "model"), None),
    ("--since 30d --by tenant,route,cache", 30, ("tenant", "route", "cache"), None),
    ("--since 30d --by tag", 30, ("tag",), None),
    ("--since 30d --tag app=chat --by model", 30, ("model",), "app=chat"),
]


Store = SQLiteLedger | RedisLedger | PostgresLedger


async def fill(ledger: Store, n: int, now: float, chunk: int) -> float:
    started = time.perf_counter()
    done = 0
    while done < n:
        batch = make_records(min(chunk, n - done), now, seed=done + 11, first=done, total=n)
        if isinstance(ledger, SQLiteLedger):
            await ledger._in_thread(_sqlite_write, ledger, batch)
        elif isinstance(ledger, PostgresLedger):
            await ledger._in_thread(_postgres_write, ledger, batch)
        else:
            for start in range(0, len(batch), 500):
                await ledger._send(batch[start : start + 500])
        done += len(batch)
        print(f"  {type(ledger).__name__}: {done:,} records", end="\r", flush=True)
    print()
    return time.perf_counter() - started


def _sqlite_write(ledger: SQLiteLedger, batch: list[LedgerRecord]) -> None:
    sqlite_schema.store_batch(ledger._connect(), batch)


def _postgres_write(ledger: PostgresLedger, batch: list[LedgerRecord]) -> None:
    postgres_schema.store_batch(ledger._connect(), batch, ledger._partitions)


async def report_times(ledger: Store, now: float) -> list[tuple[str, float, int]]:
    rows = []
    for label, days, by, tag in REPORTS:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            report = await ledger.report(now - days * DAY, now, by, tag=tag)
            times.append(time.perf_counter() - t)
        rows.append((label, min(times), report.totals.requests))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--redis", default="own", help="a Redis URL, or 'own': start a redis-server for the run"
    )
    parser.add_argument("--redis-records", type=int, default=None)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432", help="a server URL"
    )
    parser.add_argument("--postgres-records", type=int, default=None)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-database", default="gw_bench_ledger")
    parser.add_argument("--json", type=Path, help="write the PostgreSQL figures here")
    parser.add_argument("--record-calls", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ledger")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the SQLite ledger of the last run if there"
    )
    args = parser.parse_args()
    redis_n = args.records if args.redis_records is None else args.redis_records
    if not args.reuse:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "record-bench", ignore_errors=True)
    shutil.rmtree(args.out / "rb", ignore_errors=True)
    server = None
    args.own_redis = args.redis == "own"
    if args.own_redis and not args.skip_redis:
        server, args.redis = start_redis()
    try:
        await run(args, redis_n)
        if not args.skip_postgres:
            n = args.records if args.postgres_records is None else args.postgres_records
            figures = await run_postgres(args, n)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"postgres": figures}, indent=1) + "\n")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout:
            break
        time.sleep(0.05)
    return server, f"redis://127.0.0.1:{port}/0"


async def run(args: argparse.Namespace, redis_n: int) -> None:
    out: Path = args.out
    lines = [
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| record() on the event loop | p50 | p99 | writer throughput |",
        "| --- | --- | --- | --- |",
    ]

    # 1. record()
    prefix = f"bench:ledger:{uuid.uuid4().hex}:"
    cases: list[tuple[str, object]] = [
        ("SQLite", lambda: open_ledger(None, out / "record-bench")),
    ]
    if not args.skip_redis:
        cases.append(("Redis", lambda: open_ledger(args.redis, out / "rb", key_prefix=prefix)))
    for name, factory in cases:
        r = await bench_record(factory, args.record_calls)
        lines.append(
            f"| {name} ({args.record_calls:,} calls) | {r['p50_us']:.2f} µs | "
            f"{r['p99_us']:.2f} µs | {r['stored_per_s']:,.0f} records/s stored |"
        )

    # 2. SQLite with 1M records
    now = time.time()
    show(lines)
    sqlite = open_ledger(None, out / "sqlite")
    assert isinstance(sqlite, SQLiteLedger)
    reused = sqlite.path.exists()
    await sqlite.start()
    if reused:
        written = "reused from an earlier run"
    else:
        fill_s = await fill(sqlite, args.records, now, 20_000)
        written = (
            f"written in {fill_s:.1f} s ({args.records / fill_s:,.0f} records/s in batches "
            "of 20,000)"
        )
    size = sqlite.path.stat().st_size
    lines = [
        "",
        f"SQLite ledger: {args.records:,} records over 30 days, {written}; file "
        f"{size / 2**20:,.0f} MiB.",
        "",
        "| report over the SQLite ledger | in process | `report` CLI (new process) | requests |",
        "| --- | --- | --- | --- |",
    ]
    env = {**os.environ, "GATEWAY_DATA_DIR": str(out / "sqlite")}
    env.pop("GATEWAY_REDIS_URL", None)
    for label, seconds, requests in await report_times(sqlite, now):
        cli = [sys.executable, "-m", "gateway", "report", *label.split(), "-f", "json"]

        def run_cli(cli: list[str] = cli) -> None:
            subprocess.run(cli, env=env, cwd=ROOT, check=True, capture_output=True)

        lines.append(f"| `{label}` | {seconds:.3f} s | {timed(run_cli):.2f} s | {requests:,} |")
    startup = timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "gateway", "report", "--help"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    )
    lines.append(
        f"| (the CLI's start-up alone: `report --help`, imports included) | | {startup:.2f} s | |"
    )
    show(lines)
    # what the rollups save: the same 30-day report summed from the raw records
    since = now - 30 * DAY

    def scan(tagged: bool) -> None:
        conn = sqlite.reader()
        assert conn is not None
        by = ("tag",) if tagged else ("model",)
        ReportQuery(tagged, None, None, by).scan(conn, since, now)
        conn.close()

    lines = [
        f"| (no rollups: 30 days by model summed from the {args.records:,} raw records) | "
        f"{timed(lambda: scan(False), repeat=1):.2f} s | | |",
        f"| (no rollups, by tag via json_each) | {timed(lambda: scan(True), repeat=1):.2f} s | | |",
    ]
    await sqlite.aclose()
    show(lines)

    # 3. Redis with the same records
    if not args.skip_redis:
        redis = open_ledger(args.redis, out / "redis", key_prefix=prefix + "fill:", timeout_s=30)
        assert isinstance(redis, RedisLedger)
        await redis.start()
        try:
            fill_s = await fill(redis, redis_n, now, 20_000)
            lines = [
                "",
                f"Redis ledger: {redis_n:,} records written in {fill_s:.1f} s "
                f"({redis_n / fill_s:,.0f} records/s: one Lua call each, pipelines of 500).",
                "",
                "| report from the Redis rollups | in process | requests |",
                "| --- | --- | --- |",
            ]
            for label, seconds, requests in await report_times(redis, now):
                lines.append(f"| `{label}` | {seconds:.3f} s | {requests:,} |")
        finally:
            if not args.own_redis:  # a shared Redis: take our keys away
                keys = [k async for k in redis.redis.scan_iter(match=f"{prefix}*", count=5000)]
                for start in range(0, len(keys), 5000):
                    await redis.redis.delete(*keys[start : start + 5000])
            await redis.aclose()
        show(lines)


async def run_postgres(args: argparse.Namespace, n: int) -> dict[str, object]:
    """Section 4: ``n`` records into PostgreSQL, then the reports, in process and by CLI;
    returns the figures."""
    name = args.postgres_database
    url = f"{args.postgres}/{name}"
    with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not args.reuse:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not args.reuse:
            admin.execute(f'CREATE DATABASE "{name}"')
    postgres_schema.upgrade(url)
    ledger = open_ledger(None, args.out / "postgres", ledger_url=url, timeout_s=60)
    assert isinstance(ledger, PostgresLedger)
    await ledger.start()
    now = time.time()
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM ledger.records").fetchone()
    figures: dict[str, object] = {"records": stored[0] if stored and stored[0] else n}
    if stored and stored[0]:
        written = f"{stored[0]:,} records reused from an earlier run"
    else:
        fill_s = await fill(ledger, n, now, 20_000)
        figures["write_records_per_s"] = n / fill_s
        written = (
            f"{n:,} records written in {fill_s:.1f} s ({n / fill_s:,.0f} records/s: COPY and "
            "rollup upserts, one transaction per 20,000)"
        )
    with psycopg.connect(url) as conn:
        size = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    figures |= {"database_bytes": size[0] if size else 0, "load_average": os.getloadavg()}
    lines = [
        "",
        f"PostgreSQL ledger: {written}; database {size[0] / 2**20 if size else 0:,.0f} MiB.",
        "",
        "| report from the PostgreSQL ledger | in process | `report` CLI | requests |",
        "| --- | --- | --- | --- |",
    ]
    env = {**os.environ, "GATEWAY_DATA_DIR": str(args.out / "postgres"), "GATEWAY_LEDGER_URL": url}
    reports = []
    for label, seconds, requests in await report_times(ledger, now):
        cli = [sys.executable, "-m", "gateway", "report", *label.split(), "-f", "json"]

        def run_cli(cli: list[str] = cli) -> None:
            subprocess.run(cli, env=env, cwd=ROOT, check=True, capture_output=True)

        cli_s = timed(run_cli)
        lines.append(f"| `{label}` | {seconds:.3f} s | {cli_s:.2f} s | {requests:,} |")
        reports.append({"report": label, "in_process_s": seconds, "cli_s": cli_s})
    await ledger.aclose()
    show(lines)
    return figures | {"reports": reports}


def show(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
