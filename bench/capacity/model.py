#!/usr/bin/env python3
"""The capacity model: from the figures the benches measured (JSON files under bench/), what a
deployment needs at a given request rate and traffic mix (docs/capacity.md).

    python bench/capacity/model.py [--rates 1000,10000,100000]
        [--mix exact=0.2,semantic=0.1,miss=0.7] [--stream 0.3] [--semantic-entries 1000000]
        [--utilisation 0.6] [--update docs/capacity.md]

Inputs (each written by a bench; a missing one leaves its columns "not measured"):

- ``bench/capacity/results/redis_ops.json`` and ``redis_ops_no_semantic.json``
  (``bench/capacity/redis_ops.py``): per path, the gateway's CPU, Redis's CPU, Redis commands
  and bytes per request, with and without the semantic cache; ``redis-benchmark`` ops/s;
- ``bench/capacity/results/ledger_postgres*.json`` (``bench/ledger/run.py --json``): PostgreSQL
  records written per second (one writer, COPY and rollups in batches of 20,000; the best of
  the runs that wrote) and bytes per record on disk (tables, indexes and rollups; from the
  largest database);
- ``bench/capacity/results/faiss_memory.json`` (``bench/capacity/faiss_memory.py``): a replica's
  memory per million entries of the in-process FAISS index;
- ``bench/capacity/results/overhead.json`` (``bench/overhead/run.py --json``): the gateway's
  CPU per request with embedded stores and no limits, for comparison;
- ``bench/semantic_index/results.json`` (``bench/semantic_index/run.py``): memory of a replica
  and of the server per index backend (local FAISS fed from Redis, pgvector).

The mix: ``--mix`` gives the shares of exact hits, semantic hits and misses; ``--stream`` the
share of misses that are streamed. Cores are planned at ``--utilisation`` of each core (the
rest is headroom for bursts), a gateway replica is one process (one event loop, about one
core), and at least two replicas run. ``--update FILE`` rewrites the part of FILE between
``<!-- model:begin -->`` and ``<!-- model:end -->`` with the printed tables.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
RESULTS = HERE / "results"
MONTH_S = 30.44 * 86_400
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Mix:
    """Shares of the four paths, summing to 1."""

    shares: dict[str, float]

    @classmethod
    def of(cls, text: str, stream: float, semantic_on: bool) -> Mix:
        given = {k: float(v) for k, v in (part.split("=") for part in text.split(","))}
        if not semantic_on:  # no semantic cache: its hits are misses
            given["miss"] = given.get("miss", 0.0) + given.pop("semantic", 0.0)
        total = sum(given.values())
        miss = given.get("miss", 0.0) / total
        shares = {k: v / total for k, v in given.items() if k != "miss"}
        return cls({**shares, "miss": miss * (1 - stream), "stream": miss * stream})

    def mean(self, paths: dict[str, Any], field: str) -> float:
        """The mix's mean of a per-request figure."""
        return sum(share * float(paths[path][field]) for path, share in self.shares.items())


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def index_memory(entries: int) -> dict[str, str]:
    """Memory of ``entries`` semantic entries per backend: (replica, server) as text."""
    out: dict[str, str] = {}
    local = load(RESULTS / "faiss_memory.json")
    if local:
        per_m = local["replica_rss_mb_per_million"]
        out["local FAISS, per replica"] = f"{per_m * entries / 1e6 / 1024:,.1f} GiB"
    for row in load(BENCH / "semantic_index" / "results.json") or []:
        # local: the entries also live in Redis, which new replicas read; pgvector: only there
        server = {"local": "local FAISS, in Redis", "pgvector": "pgvector, in PostgreSQL"}
        name = server.get(row["backend"], row["backend"])
        scaled = row["server_bytes"] * entries / row["entries"] / 2**30
        out[f"{name} (scaled from {row['entries']:,})"] = f"{scaled:,.1f} GiB"
        if row["backend"] == "pgvector":
            out[f"pgvector, per replica (at {row['entries']:,})"] = f"{row['replica_rss_mb']} MB"
    if not any(k.startswith("pgvector") for k in out):
        out["pgvector"] = NOT_MEASURED
    return out


def plan(args: argparse.Namespace) -> str:
    with_sem = load(RESULTS / "redis_ops.json")
    without = load(RESULTS / "redis_ops_no_semantic.json")
    ledgers = [load(path)["postgres"] for path in sorted(RESULTS.glob("ledger_postgres*.json"))]
    written = [run for run in ledgers if "write_records_per_s" in run]
    largest = max(ledgers, key=lambda run: run["records"], default=None)
    if with_sem is None:
        raise SystemExit("no bench/capacity/results/redis_ops.json: run redis_ops.py first")
    mix = Mix.of(args.mix, args.stream, semantic_on=True)
    paths = with_sem["paths"]
    cpu_ms = mix.mean(paths, "gateway_cpu_ms_per_request")
    off_cpu_ms = None
    if without is not None:
        off_cpu_ms = Mix.of(args.mix, args.stream, False).mean(
            without["paths"], "gateway_cpu_ms_per_request"
        )
    redis_ms = mix.mean(paths, "redis_cpu_ms_per_request")
    commands = mix.mean(paths, "commands_per_request")
    net = mix.mean(paths, "bytes_in_per_request") + mix.mean(paths, "bytes_out_per_request")
    per_redis_core = args.utilisation * 1000 / redis_ms
    rows_per_s = max((run["write_records_per_s"] for run in written), default=None)
    record_bytes = largest["database_bytes"] / largest["records"] if largest else None
    lines = [
        f"Mix: {', '.join(f'{k} {v:.0%}' for k, v in mix.shares.items())}; cores planned at "
        f"{args.utilisation:.0%}; semantic index of {args.semantic_entries:,} entries.",
        "",
        "| per request (mix mean) | measured |",
        "| --- | ---: |",
        f"| gateway CPU, semantic cache on | {cpu_ms:.2f} ms ({1000 / cpu_ms:,.0f} requests/s "
        "per core) |",
    ]
    if off_cpu_ms is not None:
        lines.append(
            f"| gateway CPU, semantic cache off | {off_cpu_ms:.2f} ms "
            f"({1000 / off_cpu_ms:,.0f} requests/s per core) |"
        )
    lines += embedded_stores()
    lines += [
        f"| Redis commands | {commands:.1f} |",
        f"| Redis CPU | {redis_ms * 1000:.0f} µs ({1000 / redis_ms:,.0f} requests/s per Redis "
        "core) |",
        f"| Redis network, in + out | {net / 1024:.1f} KiB |",
        f"| PostgreSQL disk per record (tables, indexes, rollups) | "
        f"{f'{record_bytes:.0f} bytes' if record_bytes else NOT_MEASURED} |",
        "",
        "| requests/s | gateway replicas (cores), semantic on | semantic off | Redis | "
        "Redis ops/s, network | PostgreSQL ledger | first to saturate (load on one) |",
        "| ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for rate in args.rates:
        cores = rate * cpu_ms / 1000 / args.utilisation
        off = "" if off_cpu_ms is None else replicas(rate * off_cpu_ms / 1000 / args.utilisation)
        shards = math.ceil(rate / per_redis_core)
        redis_text = "one instance" if shards == 1 else f"{shards} cores: a cluster (see below)"
        load_redis = rate / per_redis_core
        pg = NOT_MEASURED
        load_pg = 0.0
        if rows_per_s and record_bytes:
            load_pg = rate / (rows_per_s * args.utilisation)
            disk = rate * MONTH_S * record_bytes / 2**40
            pg = f"{rate:,} rows/s ({load_pg:.1f}x one writer), {disk:,.1f} TiB a month"
        first = (
            f"Redis ({load_redis:.1f}x a core)"
            if load_redis >= load_pg
            else f"PostgreSQL writes ({load_pg:.1f}x one writer)"
        )
        lines.append(
            f"| {rate:,} | {replicas(cores)} | {off} | {redis_text} | "
            f"{rate * commands / 1000:,.0f}k, {rate * net * 8 / 1e9:,.2f} Gbit/s | {pg} | "
            f"{first} |"
        )
    memory = index_memory(args.semantic_entries)
    lines += ["", "| semantic index memory | " + " | ".join(memory) + " |"]
    lines += ["| --- |" + " --- |" * len(memory), f"| {args.semantic_entries:,} entries | "]
    lines[-1] += " | ".join(memory.values()) + " |"
    return "\n".join(lines)


def embedded_stores() -> list[str]:
    """The gateway's CPU per miss without Redis, limits or the semantic cache (bench/overhead,
    SQLite ledger), at its highest concurrency measured: what the state in Redis adds."""
    overhead = load(RESULTS / "overhead.json")
    if overhead is None:
        return []
    points = [p for p in overhead["points"] if p["target"] == "gateway" and p["cpu_ms_per_req"]]
    out = []
    for mode in ("non-stream", "stream"):
        best = max((p for p in points if p["mode"] == mode), key=lambda p: p["concurrency"])
        out.append(
            f"| gateway CPU, {mode} miss, embedded stores, no limits (bench/overhead, "
            f"c={best['concurrency']}) | {best['cpu_ms_per_req']:.2f} ms |"
        )
    return out


def replicas(cores: float) -> str:
    return f"{max(2, math.ceil(cores))} ({cores:,.1f})"


def update(path: Path, table: str) -> None:
    text = path.read_text()
    new, count = re.subn(
        r"(<!-- model:begin -->\n).*?(<!-- model:end -->)",
        lambda m: f"{m.group(1)}{table}\n{m.group(2)}",
        text,
        flags=re.S,
    )
    if count != 1:
        raise SystemExit(f"{path}: no <!-- model:begin --> ... <!-- model:end --> part")
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000,100000")
    ap.add_argument("--mix", default="exact=0.2,semantic=0.1,miss=0.7")
    ap.add_argument("--stream", type=float, default=0.3, help="share of misses streamed")
    ap.add_argument("--semantic-entries", type=int, default=1_000_000)
    ap.add_argument("--utilisation", type=float, default=0.6, help="planned busy share a core")
    ap.add_argument("--update", type=Path, help="rewrite the model's part of this file")
    args = ap.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    table = plan(args)
    print(table)
    if args.update:
        update(args.update, table)


if __name__ == "__main__":
    main()
