#!/usr/bin/env python3
"""What one upstream request costs a Python HTTP client: httpx vs aiohttp, side by side.

    python bench/overhead/clients.py [--requests 3000] [--concurrency 1,16,64]

One process, uvloop, a pooled keep-alive client per library, against the same nginx fake upstream
as run.py (upstream.py), non-stream and stream (the body read to its end). For each library,
mode and concurrency: requests per second and CPU time of this process per request (what the
client costs the gateway's one core). A library that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream

BODY = json.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "x" * 120}], "max_tokens": 64}
).encode()
HEADERS = {"content-type": "application/json"}
PATHS = {"non-stream": "/v1/chat/completions", "stream": "/stream/v1/chat/completions"}


async def drive(one: Callable[[], Awaitable[None]], n: int, conc: int) -> tuple[float, float]:
    for _ in range(min(200, n)):  # warm the pool and the code paths
        await one()
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await one()

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, cpu / n * 1e6


async def with_httpx(url: str, n: int, conc: int) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one() -> None:
            async with client.stream("POST", url, content=BODY, headers=HEADERS) as r:
                async for _ in r.aiter_bytes():
                    pass

        return await drive(one, n, conc)


async def with_aiohttp(url: str, n: int, conc: int) -> tuple[float, float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as r:
                async for _ in r.content.iter_any():
                    pass

        return await drive(one, n, conc)


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[tuple[float, float]]]] = {
    "httpx": with_httpx,
    "aiohttp": with_aiohttp,
}


def version(mod: str) -> str | None:
    try:
        return str(__import__(mod).__version__)
    except ImportError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000, help="measured requests per point")
    ap.add_argument("--concurrency", default="1,16,64")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",")]
    try:
        import uvloop

        run: Callable[[Any], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    libs = {name: version(name) for name in CLIENTS}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        nginx = upstream.start_nginx(Path(tmp), port)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            for mode, path in PATHS.items():
                for conc in concs:
                    for name, fn in CLIENTS.items():
                        if libs[name] is None:
                            continue
                        url = f"http://127.0.0.1:{port}{path}"
                        rps, cpu_us = run(fn(url, args.requests, conc))
                        rows.append((mode, conc, f"{name} {libs[name]}", rps, cpu_us))
                        print(f"[clients] {rows[-1]}", file=sys.stderr)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(nginx.pid, signal.SIGTERM)
            nginx.wait(5)
    print("| mode | c | client | req/s | CPU µs/req |")
    print("| --- | ---: | --- | ---: | ---: |")
    for mode, conc, name, rps, cpu_us in rows:
        print(f"| {mode} | {conc} | {name} | {rps:,.0f} | {cpu_us:,.0f} |")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\n{args.requests} requests per point, one process; load average {load} (shared).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
