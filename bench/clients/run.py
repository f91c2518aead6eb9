"""CPU cost per request of the async HTTP clients the gateway could use towards providers.

Runs the nginx fake upstream of bench/overhead and sends the same keep-alive POST with each
client in turn, in one process, one at a time, measuring process CPU time (not wall time, so a
busy machine inflates all clients alike). The gateway uses the cheapest; see BENCHMARKS.md.

    .venv/bin/python bench/clients/run.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "overhead"))
from upstream import start_nginx

BODY = (
    b'{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful '
    b'assistant."},{"role":"user","content":"Explain in one sentence why caching helps."}]}'
)
HEADERS = {"content-type": "application/json"}


async def cpu_per_request(send: Callable[[], Awaitable[bytes]], n: int) -> float:
    for _ in range(min(200, n)):  # warm the pool
        await send()
    started = time.process_time()
    for _ in range(n):
        await send()
    return (time.process_time() - started) / n * 1e6


async def measure(url: str, n: int) -> dict[str, float]:
    results = {}
    async with httpx.AsyncClient(headers=HEADERS) as client:

        async def httpx_send() -> bytes:
            async with client.stream("POST", url, content=BODY) as response:
                return await response.aread()

        results["httpx 0.28 AsyncClient"] = await cpu_per_request(httpx_send, n)
    async with aiohttp.ClientSession(headers=HEADERS) as session:

        async def aiohttp_send() -> bytes:
            async with session.post(url, data=BODY) as response:
                return await response.read()

        results["aiohttp ClientSession"] = await cpu_per_request(aiohttp_send, n)
    return results


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        nginx = start_nginx(Path(tmp), port)
        try:
            _wait_for(port)
            results = uvloop.run(
                measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests)
            )
        finally:
            nginx.terminate()
            nginx.wait()
    best = min(results.values())
    print("| client | CPU µs per request | ratio to the cheapest |\n| --- | ---: | ---: |")
    for name, cost in results.items():
        print(f"| {name} | {cost:,.0f} | {cost / best:.2f}× |")


if __name__ == "__main__":
    main()
