#!/usr/bin/env python3
"""Per request and per path: Redis operations and bytes, Redis CPU and the gateway's CPU,
through a gateway that keeps its caches, ledger and tenant limits in Redis (the inputs of the
capacity model, bench/capacity/model.py and docs/capacity.md).

    python bench/capacity/redis_ops.py [--requests 1000] [--concurrency 16] [--no-semantic]
                                       [--out FILE]

Starts its own redis-server (so no other client's commands are counted), the fake nginx
upstream of bench/overhead and one gateway (GATEWAY_REDIS_URL set, the semantic cache on, a
tenant with request, token and concurrency limits and a daily budget; ``--no-semantic``: the
semantic cache off, and no semantic path). For each path it reads
``INFO commandstats``, ``INFO stats`` (total_net_input_bytes, total_net_output_bytes), ``INFO
cpu`` and the CPU time of the gateway's processes before and after ``--requests`` requests
(``--concurrency`` at a time), waits for the ledger's batched writes, and subtracts what the
idle gateway does in the same time (its background reads). Each response's ``x-gateway-cache``
header is counted, so a path's figures are those of that path.

Last, ``redis-benchmark`` (GET, SET, INCR, HSET; 50 clients, no pipelining) against the same
idle server: the plain operations per second of one Redis core here, beside the gateway's own
mix of commands (Lua scripts included) measured above.

Paths: ``miss`` (a new question, answered by the upstream), ``exact`` (the same body again),
``semantic`` (the stored question with other spaces between its words: another body, the
same meaning) and ``stream`` (a new question, streamed). With the semantic cache on, a miss
embeds its question too, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench" / "overhead"))
import upstream  # noqa: E402
from procs import CLK_TCK, Procs, free_port, group_ticks, log_tail, wait_port  # noqa: E402

KEY = "sk-capacity-bench"
POLICY = """\
version: 1
models:
  mock:
    provider: openai_compatible
    base_url: http://127.0.0.1:{port}/v1
    model: mock-model
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  mock-stream:
    provider: openai_compatible
    base_url: http://127.0.0.1:{port}/stream/v1
    model: mock-model
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
baseline_model: mock
routes:
  - {{name: default, to: mock}}
cache:
  semantic: {{enabled: {semantic}}}
tenants:
  bench:
    api_keys: ["{key}"]
    limits:
      requests_per_minute: 1000000
      tokens_per_minute: 1000000000
      max_concurrent_requests: 64
    daily_budget_usd: 1000000
"""
QUESTION = "How do I reset the password of my account in the mobile app"
COUNTERS = ("bytes_in", "bytes_out", "gateway_cpu_ms", "redis_cpu_us")
"""Figures of a snapshot that are not Redis commands."""


class Stack:
    """Our redis-server, the fake upstream and the gateway, each in its own process group."""

    def __init__(self, tmp: Path, procs: Procs, semantic: bool) -> None:
        self.procs, self.tmp, self.semantic = procs, tmp, semantic
        redis_port = free_port()
        log = tmp / "redis.log"
        cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
        self.redis_proc = self.procs.start([*cmd, "--appendonly", "no"], log)
        wait_port(redis_port, self.redis_proc, 10, "redis-server", log)
        self.redis = redis.Redis(port=redis_port)
        up_port = free_port()
        with (tmp / "nginx.out").open("wb") as out:
            nginx = self.procs.add(upstream.start_nginx(tmp, up_port, out))
        wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
        self.gateway, self.base = self._start_gateway(up_port, redis_port)

    def _start_gateway(self, up_port: int, redis_port: int) -> tuple[subprocess.Popen[bytes], str]:
        (self.tmp / "policy").mkdir()
        policy = self.tmp / "policy" / "policy.yaml"
        on = "true" if self.semantic else "false"
        policy.write_text(POLICY.format(port=up_port, key=KEY, semantic=on))
        port = free_port()
        cmd = [str(ROOT / ".venv" / "bin" / "gateway"), "serve", "--policy", str(policy)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env["GATEWAY_DATA_DIR"] = str(self.tmp / "data")
        env["GATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        log = self.tmp / "gateway.log"
        proc = self.procs.start(cmd, log, cwd=self.tmp, env=env)
        wait_port(port, proc, 120, "gateway", log)
        return proc, f"http://127.0.0.1:{port}/v1"

    def snapshot(self) -> Counter[str]:
        """Calls per Redis command, Redis's network byte counters, and both servers' CPU."""
        counts: Counter[str] = Counter()
        for name, stats in self.redis.info("commandstats").items():
            counts[name.removeprefix("cmdstat_")] = int(stats["calls"])
        info = self.redis.info("stats")
        counts["bytes_in"] = int(info["total_net_input_bytes"])
        counts["bytes_out"] = int(info["total_net_output_bytes"])
        cpu = self.redis.info("cpu")  # microseconds, where /proc counts 10 ms ticks
        counts["info"] -= 3  # the INFO calls of this snapshot
        counts["redis_cpu_us"] = round((cpu["used_cpu_sys"] + cpu["used_cpu_user"]) * 1e6)
        ticks = group_ticks({self.gateway.pid})[self.gateway.pid]
        counts["gateway_cpu_ms"] = ticks * 1000 // CLK_TCK
        return counts


async def chat(client: httpx.AsyncClient, base: str, text: str, *, stream: bool) -> str:
    """One chat completion; returns its ``x-gateway-cache`` header."""
    body: dict[str, object] = {
        "model": "mock-stream" if stream else "mock",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 64,
        "temperature": 0,  # the semantic cache takes only low temperatures
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {KEY}"}
    async with client.stream("POST", f"{base}/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        await r.aread()
        return str(r.headers.get("x-gateway-cache", ""))


async def send(base: str, texts: list[str], stream: bool, concurrency: int) -> Counter[str]:
    """Send every text, ``concurrency`` at a time; the count of each ``x-gateway-cache``."""
    seen: Counter[str] = Counter()
    todo = iter(texts)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            for text in todo:
                seen[await chat(client, base, text, stream=stream)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


async def wait_ready(stack: Stack) -> None:
    """Until a chat with the tenant's key answers (bench/overhead's check sends another key)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if stack.gateway.poll() is not None:
            raise SystemExit(f"the gateway exited:\n{log_tail(stack.tmp / 'gateway.log')}")
        try:
            await send(stack.base, ["ready?"], False, 1)
            return
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
    raise SystemExit(f"no answer in 120 s:\n{log_tail(stack.tmp / 'gateway.log')}")


def variants(text: str, n: int, rnd: random.Random) -> list[str]:
    """``n`` distinct spellings of ``text`` that differ only in the spaces between its words
    (another body for the exact cache, the same tokens for the embedding)."""
    words = text.split()
    seen: set[str] = {text}
    out: list[str] = []
    while len(out) < n:
        candidate = words[0] + "".join(" " * rnd.randint(1, 3) + w for w in words[1:])
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def per_request(
    delta: Counter[str], elapsed: float, idle_per_s: dict[str, float], n: int
) -> dict[str, object]:
    """One path's figures per request, less what the idle gateway does in the same time."""
    net = {k: max(0.0, (v - idle_per_s.get(k, 0.0) * elapsed) / n) for k, v in delta.items()}
    commands = {k: round(v, 2) for k, v in sorted(net.items()) if k not in COUNTERS and v >= 0.005}
    return {
        "commands_per_request": round(sum(commands.values()), 2),
        "by_command": commands,
        "bytes_in_per_request": round(net.get("bytes_in", 0.0)),
        "bytes_out_per_request": round(net.get("bytes_out", 0.0)),
        "gateway_cpu_ms_per_request": round(net.get("gateway_cpu_ms", 0.0), 3),
        "redis_cpu_ms_per_request": round(net.get("redis_cpu_us", 0.0) / 1000, 4),
    }


async def measure(args: argparse.Namespace, stack: Stack) -> dict[str, object]:
    n, rnd = args.requests, random.Random(5)
    await wait_ready(stack)
    await send(stack.base, [QUESTION], False, 1)  # the exact and semantic paths' entry
    await asyncio.sleep(args.settle)
    before, started = stack.snapshot(), time.monotonic()
    await asyncio.sleep(3.0)
    idle_s = time.monotonic() - started
    idle_per_s = {k: v / idle_s for k, v in (stack.snapshot() - before).items()}
    token = f"{time.time():.0f}"
    cases: dict[str, tuple[list[str], bool]] = {
        "miss": ([f"Question {token} number {i}: what is {i} + {i}?" for i in range(n)], False),
        "exact": ([QUESTION] * n, False),
        **({"semantic": (variants(QUESTION, n, rnd), False)} if stack.semantic else {}),
        "stream": ([f"Stream {token} question {i}: name {i} colours" for i in range(n)], True),
    }
    paths: dict[str, object] = {}
    for path, (texts, stream) in cases.items():
        before, started = stack.snapshot(), time.monotonic()
        seen = await send(stack.base, texts, stream, args.concurrency)
        sending_s = time.monotonic() - started
        await asyncio.sleep(args.settle)
        elapsed = time.monotonic() - started
        figures = per_request(stack.snapshot() - before, elapsed, idle_per_s, n)
        paths[path] = {"answered_as": dict(seen), "rps": round(n / sending_s, 1), **figures}
        print(path, json.dumps(paths[path]), flush=True)
    return {
        "semantic_cache": stack.semantic,
        "requests_per_path": n,
        "concurrency": args.concurrency,
        "idle_per_s": {k: round(v, 3) for k, v in idle_per_s.items() if v},
        "paths": paths,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def redis_benchmark(port: int, requests: int = 100_000) -> dict[str, float]:
    """Operations per second of ``redis-benchmark`` per command."""
    cmd = ["redis-benchmark", "-p", str(port), "-n", str(requests), "-c", "50"]
    out = subprocess.run(
        [*cmd, "-t", "get,set,incr,hset", "--csv", "-q"], capture_output=True, text=True, check=True
    ).stdout
    return {row["test"]: float(row["rps"]) for row in csv.DictReader(out.splitlines())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds for the ledger to flush")
    ap.add_argument(
        "--semantic", action=argparse.BooleanOptionalAction, default=True, help="the semantic cache"
    )
    ap.add_argument("--out", type=Path, help="default: results/redis_ops[_no_semantic].json")
    args = ap.parse_args()
    name = "redis_ops.json" if args.semantic else "redis_ops_no_semantic.json"
    args.out = args.out or HERE / "results" / name
    procs = Procs()
    try:
        stack = Stack(Path(tempfile.mkdtemp(prefix="bench-capacity-")), procs, args.semantic)
        result = asyncio.run(measure(args, stack))
        port = stack.redis.connection_pool.connection_kwargs["port"]
        result["redis_benchmark_ops_per_s"] = redis_benchmark(port)
    finally:
        procs.stop_all()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
