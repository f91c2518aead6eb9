#!/usr/bin/env python3
"""The semantic cache's two indexes side by side: this process's FAISS (``cache.semantic.index:
local``, shared through Redis) and the shared pgvector table (``index: pgvector``).

    python bench/semantic_index/run.py [--entries 100000] [--backends local,pgvector]
        [--tenants 10] [--lookups 1000] [--out bench/semantic_index/results.json]

For each backend, the entries (synthetic unit vectors of 384 dimensions, a question of
``--text-bytes`` and an answer of ``--payload-bytes`` each, spread over ``--tenants`` tenants of
one context each) are first written where a deployment keeps them:

- local: a private Redis (``redis-server`` on a free port, no persistence) in the layout of
  ``gateway.semantic.store``, as the replicas' stores leave it;
- pgvector: a fresh database, ``gateway db upgrade``, the rows COPY'd in (binary) and then the
  HNSW index built once (``maintenance_work_mem`` and parallel build workers as given).

Then a new replica starts, in a process of its own: ``SemanticCache.open`` as the gateway calls
it (local: the mirror's resync, which loads every entry from Redis and builds the FAISS
partitions; pgvector: connect). ``ready_s`` is that call; the replica's resident memory
(``replica_rss_mb``) is read right after. It then runs ``--lookups`` lookups one at a time
(c=1) and three times as many from 32 concurrent tasks (c=32): half are near-duplicates of a
stored entry (cosine ~0.99, a hit), half random vectors (a miss), at threshold 0.9, through
``SemanticCache.lookup`` with a guard that accepts every candidate (the guard is the same code
for both indexes; this measures the index). Latency is per lookup, from the call to its answer.

``build_s``: local: the same as ``ready_s`` (every new replica builds its own index);
pgvector: the COPY and the HNSW build, once for the whole deployment. ``server_bytes``: local:
what the entries hold in Redis (``used_memory`` after minus before); pgvector: the table and
its indexes (``pg_total_relation_size``). Results are merged into ``--out`` by (backend,
entries); the capacity model (bench/capacity) reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.capacity.faiss_memory import rss_mb  # noqa: E402
from gateway.ml.guard import Verdict  # noqa: E402
from gateway.semantic import SemanticCache  # noqa: E402
from gateway.semantic.codec import Record, encode  # noqa: E402
from gateway.semantic.lazy import NAMESPACE  # noqa: E402
from gateway.semantic.store import id_hex  # noqa: E402

DIM = 384
CHUNK = 20_000
THRESHOLD = 0.9
SERVER = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

Vectors = npt.NDArray[np.float32]


def chunks(entries: int) -> Iterator[tuple[int, Vectors]]:
    """(first entry number, unit rows) in chunks; chunk ``n`` is always the same rows."""
    for first in range(0, entries, CHUNK):
        rng = np.random.default_rng(1000 + first // CHUNK)
        rows = rng.standard_normal((min(CHUNK, entries - first), DIM), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield first, rows


def tenant_of(number: int, tenants: int) -> str:
    return f"tenant-{number % tenants}"


def queries(entries: int, tenants: int, count: int, seed: int) -> list[tuple[str, Vectors]]:
    """Half near-duplicates of stored entries (from the first chunk), half random vectors."""
    rng = np.random.default_rng(seed)
    _, first_rows = next(chunks(entries))
    out: list[tuple[str, Vectors]] = []
    for i in range(count):
        if i % 2 == 0:
            number = int(rng.integers(len(first_rows)))
            row = first_rows[number] + 0.1 * rng.standard_normal(DIM, dtype=np.float32) / np.sqrt(
                2 * DIM
            )
        else:
            number = int(rng.integers(entries))
            row = rng.standard_normal(DIM, dtype=np.float32)
        out.append((tenant_of(number, tenants), (row / np.linalg.norm(row)).astype(np.float32)))
    return out


# ---- the local index: entries in a private Redis ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return process, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def fill_redis(url: str, args: argparse.Namespace) -> int:
    """The entries in the layout of ``gateway.semantic.store``; returns Redis's bytes for them."""
    import redis

    client = redis.Redis.from_url(url)
    before = int(client.info("memory")["used_memory"])
    prefix = f"{NAMESPACE}:sem"
    text, payload = "q" * args.text_bytes, b"a" * args.payload_bytes
    now = time.time()
    for first, rows in chunks(args.entries):
        pipe = client.pipeline(transaction=False)
        members: dict[str, float] = {}
        for i, row in enumerate(rows):
            number = first + i
            tenant = tenant_of(number, args.tenants)
            record = Record(row.astype("<f4").tobytes(), tenant, "ctx", text, payload, now)
            pipe.set(f"{prefix}:e:{id_hex(number + 1)}", encode(record), px=86_400_000)
            members[f"{id_hex(number + 1)}:{tenant}"] = now
        pipe.zadd(f"{prefix}:all", members)
        pipe.execute()
    return int(client.info("memory")["used_memory"]) - before


# ---- the shared index: rows in PostgreSQL ----------------------------------------------------


def fill_postgres(args: argparse.Namespace) -> tuple[str, float, int]:
    """A fresh database with the entries and the HNSW index; (url, build seconds, bytes).
    With ``--reuse``, the database a previous run built for as many entries is kept (its build
    time is in the table's comment)."""
    import psycopg

    from gateway.ledger.postgres_schema import upgrade

    database = f"gw_bench_semantic_index_{args.entries}"
    url = f"{SERVER}/{database}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if args.reuse and exists.fetchone():
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT obj_description('semantic.entries'::regclass), "
                    "pg_total_relation_size('semantic.entries')"
                ).fetchone()
            if row and row[0]:
                return url, float(json.loads(row[0])["build_s"]), int(row[1])
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    upgrade(url)
    text, payload = "q" * args.text_bytes, b"a" * args.payload_bytes
    now = time.time()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX semantic.entries_embedding")
        with conn.cursor() as cursor:
            columns = "id, tenant, fingerprint, created, text, payload, embedding"
            with cursor.copy(
                f"COPY semantic.entries ({columns}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                # pgvector's binary vector goes as raw bytes: binary COPY sends no types.
                copy.set_types(["int8", "text", "text", "float8", "text", "bytea", "bytea"])
                for first, rows in chunks(args.entries):
                    big = rows.astype(">f4")
                    head = struct.pack(">HH", DIM, 0)
                    for i in range(len(rows)):
                        number = first + i
                        copy.write_row(
                            (number + 1, tenant_of(number, args.tenants), "ctx", now, text,
                             payload, head + big[i].tobytes())
                        )  # fmt: skip
        loaded = time.perf_counter() - started
        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {args.build_workers}")
        conn.execute(
            "CREATE INDEX entries_embedding ON semantic.entries "
            "USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 40)"
        )
        build = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE semantic.entries")
        comment = json.dumps({"build_s": round(build, 1), "load_s": round(loaded, 1)})
        conn.execute(f"COMMENT ON TABLE semantic.entries IS '{comment}'")
        size = conn.execute("SELECT pg_total_relation_size('semantic.entries')").fetchone()
        print(
            f"pgvector: loaded in {loaded:.1f} s, HNSW built in {build - loaded:.1f} s",
            file=sys.stderr,
        )
    return url, build, int(size[0]) if size else 0


# ---- a new replica (its own process) --------------------------------------------------------


def accept(*_: Any) -> Verdict:
    return Verdict(True)


async def timed(cache: SemanticCache, tenant: str, vector: Vectors) -> tuple[float, bool]:
    started = time.perf_counter()
    hit = await cache.lookup(tenant, "ctx", vector, "q", THRESHOLD)
    return (time.perf_counter() - started) * 1000, hit is not None


async def replica(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    cache = await SemanticCache.open(
        None if args.backend == "pgvector" else args.redis_url,
        namespace=NAMESPACE,
        max_entries=args.entries,
        max_bytes=1 << 40,
        guard_check=accept,
        pgvector_url=args.pgvector_url if args.backend == "pgvector" else None,
    )
    # Ready is when a resync succeeded (the follower retries a first one that timed out).
    while cache.health()["backend"] == "redis":
        if cache.last_sync is not None and not cache.degraded:
            break
        await asyncio.sleep(0.05)
    ready = time.perf_counter() - started
    rss = rss_mb()
    try:
        serial = queries(args.entries, args.tenants, args.lookups, seed=1)
        c1 = [await timed(cache, t, v) for t, v in serial]
        parallel = queries(args.entries, args.tenants, 3 * args.lookups, seed=2)
        todo = iter(parallel)
        c32: list[tuple[float, bool]] = []

        async def client() -> None:
            for tenant, vector in todo:
                c32.append(await timed(cache, tenant, vector))

        await asyncio.gather(*(client() for _ in range(32)))
    finally:
        await cache.aclose()

    def pct(samples: list[tuple[float, bool]], q: float) -> float:
        return round(float(np.percentile([ms for ms, _ in samples], q)), 3)

    return {
        "backend": args.backend,
        "entries": args.entries,
        "p50_ms_c1": pct(c1, 50),
        "p99_ms_c1": pct(c1, 99),
        "p50_ms_c32": pct(c32, 50),
        "p99_ms_c32": pct(c32, 99),
        "replica_rss_mb": round(rss, 1),
        "ready_s": round(ready, 3),
        "hit_rate_c1": round(sum(h for _, h in c1) / len(c1), 3),
        "expected_hit_rate": 0.5,
    }


def run_replica(args: argparse.Namespace, backend: str, **urls: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--replica", backend, "--entries", str(args.entries),
        "--tenants", str(args.tenants), "--lookups", str(args.lookups),
    ]  # fmt: skip
    for name, url in urls.items():
        command += [f"--{name.replace('_', '-')}", url]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    if backend == "pgvector":
        url, build, size = fill_postgres(args)
        result = run_replica(args, backend, pgvector_url=url)
        return {**result, "server_bytes": size, "build_s": round(build, 1)}
    directory = Path(tempfile.mkdtemp(prefix="bench-semidx-"))
    process, url = start_redis(directory)
    try:
        size = fill_redis(url, args)
        result = run_replica(args, backend, redis_url=url)
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)
    return {**result, "server_bytes": size, "build_s": result["ready_s"]}


def merge(path: Path, results: list[dict[str, Any]]) -> None:
    old = json.loads(path.read_text()) if path.exists() else []
    done = {(r["backend"], r["entries"]) for r in results}
    kept = [r for r in old if (r["backend"], r["entries"]) not in done]
    rows = sorted(kept + results, key=lambda r: (r["entries"], r["backend"]))
    path.write_text(json.dumps(rows, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--backends", default="local,pgvector")
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--lookups", type=int, default=1000, help="at c=1; three times as many at c=32")
    ap.add_argument("--text-bytes", type=int, default=100)
    ap.add_argument("--payload-bytes", type=int, default=1000)
    ap.add_argument("--maintenance-work-mem", default="4GB")
    ap.add_argument("--build-workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--reuse", action="store_true", help="keep a database built before")
    ap.add_argument("--prepare-only", action="store_true", help="build the pgvector table, stop")
    ap.add_argument("--replica", help=argparse.SUPPRESS)
    ap.add_argument("--redis-url", help=argparse.SUPPRESS)
    ap.add_argument("--pgvector-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replica:
        args.backend = args.replica
        print(json.dumps(asyncio.run(replica(args))))
        return
    if args.prepare_only:
        print(fill_postgres(args))
        return
    for backend in args.backends.split(","):
        result = measure(args, backend)
        print(json.dumps(result), flush=True)
        merge(args.out, [result])  # each as soon as it is measured: 1M takes a while


if __name__ == "__main__":
    main()
