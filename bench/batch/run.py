"""Benchmark: a batch through the gateway against the local engine's own best throughput, and
what the batch does to an interactive request's latency.

One run, one engine (``local-engine serve``, a separate process), one gateway (``gateway serve``,
a separate process, its policy sending everything to that engine, caches off so every request
reaches it). Phases, one after the other on the same machine:

1. ``direct c=32``: the N prompts sent straight to the engine by 32 closed-loop clients (each
   sends its next request when its previous one ended): the engine's own best throughput.
2. ``batch``: the same N prompts as one batch (``POST /v1/files``, ``POST /v1/batches``, polled
   until completed), the runner at ``batch.concurrency`` 32: completion tokens / wall time,
   from the create call to the poll that saw it completed.
   Phases 1 and 2 alternate for ``--rounds`` rounds, so both see the same drift in load.
3. ``interactive alone``: one client sends a short chat request through the gateway, waits
   for it, pauses ``--think-s``, again: its p50 latency on an idle engine.
4. ``batch + interactive``: the batch again, with the interactive client running beside it:
   the batch's throughput and the interactive p50 while batch work yields to it: the engine
   pauses batch lines while a live request runs (``priority_scheduling``, on unless
   ``--no-priority``), and the runner starts at most ``batch.concurrency_while_live`` lines
   while live traffic is active (and for ``batch.live_quiet_s`` after).

Reported: each round's tokens/s and ratio, the median ratio (target >= 0.8x), and the
interactive p50 during the batch over alone (``--no-interactive`` skips phases 3 and 4).

    python bench/batch/run.py --cache-dir .pytest_cache/d/local-engine-models
    python bench/batch/run.py --prompts 64 --max-tokens 8    # a short run on a busy CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.servers import free_port  # noqa: E402

KEY = "sk-bench-batch-0123456789"
SUBJECTS = [
    "the sea", "volcanoes", "the moon", "honey bees", "trains", "the desert", "chess", "owls",
    "glaciers", "the violin", "bread", "bicycles", "coral reefs", "robots", "tea", "penguins",
]  # fmt: skip


def prompts(count: int) -> list[str]:
    """Distinct short prompts (no two alike, so no cache or prefix sharing helps either side)."""
    return [f"Write one sentence about {SUBJECTS[i % len(SUBJECTS)]} (#{i})." for i in range(count)]


def policy(engine_url: str, model: str, args: argparse.Namespace) -> str:
    return textwrap.dedent(f"""\
        version: 1
        models:
          local:
            provider: openai_compatible
            base_url: {engine_url}/v1
            model: {model}
            price: {{input_per_mtok: 0.02, output_per_mtok: 0.02}}
            timeouts: {{connect_s: 5, first_token_s: 600, total_s: 900}}
            priority_scheduling: {str(args.priority).lower()}
        routes:
          - {{name: default, to: local}}
        cache:
          exact: {{enabled: false}}
        tenants:
          bench: {{api_keys: ["{KEY}"]}}
        batch:
          concurrency: {args.clients}
          concurrency_while_live: {args.while_live}
          live_latency_bound: {args.bound if args.bound else "null"}
          live_quiet_s: {args.quiet_s}
        """)


@contextmanager
def process(command: list[str], env: dict[str, str], ready: str, log: Path) -> Any:
    """A child process, up once ``ready`` answers 200; stopped at the end."""
    with log.open("wb") as out:
        child = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 600
            while True:
                if child.poll() is not None:
                    raise SystemExit(f"{command[0]} exited; see {log}")
                try:
                    if httpx.get(ready, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not start; see {log}")
                time.sleep(0.5)
            yield child
        finally:
            child.terminate()
            child.wait(timeout=60)


def chat_body(model: str, text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


async def direct(
    engine_url: str, model: str, texts: list[str], clients: int, max_tokens: int
) -> float:
    """Completion tokens/s of ``clients`` closed-loop clients straight to the engine."""
    queue = list(texts)
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            text = queue.pop()
            response = await http.post(
                f"{engine_url}/v1/chat/completions", json=chat_body(model, text, max_tokens)
            )
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=900) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return tokens / (time.monotonic() - started)


@dataclass
class Interactive:
    """One client asking through the gateway, one request at a time, until ``stop`` is set."""

    url: str
    think_s: float
    max_tokens: int
    stop: asyncio.Event
    latencies: list[float]

    async def run(self, at_most: int | None = None) -> None:
        headers = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=900, headers=headers) as http:
            n = 0
            while not self.stop.is_set() and (at_most is None or n < at_most):
                body = chat_body("auto", f"Say hello to visitor {n}.", self.max_tokens)
                started = time.monotonic()
                response = await http.post(f"{self.url}/v1/chat/completions", json=body)
                response.raise_for_status()
                self.latencies.append(time.monotonic() - started)
                n += 1
                await asyncio.sleep(self.think_s)


async def batch(url: str, texts: list[str], max_tokens: int) -> float:
    """Completion tokens/s of the texts as one batch through the gateway."""
    lines = "".join(
        json.dumps(
            {
                "custom_id": f"p{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": chat_body("auto", text, max_tokens),
            }
        )
        + "\n"
        for i, text in enumerate(texts)
    )
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:
        uploaded = await http.post(
            "/v1/files", files={"file": ("b.jsonl", lines.encode())}, data={"purpose": "batch"}
        )
        uploaded.raise_for_status()
        started = time.monotonic()
        created = await http.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        created.raise_for_status()
        while True:
            state = (await http.get(f"/v1/batches/{created.json()['id']}")).json()
            if state["status"] not in ("validating", "in_progress", "finalizing"):
                break
            await asyncio.sleep(0.2)
        wall = time.monotonic() - started
        if state["status"] != "completed" or state["request_counts"]["failed"]:
            raise SystemExit(f"the batch ended {state['status']}: {state['request_counts']}")
        output = (await http.get(f"/v1/files/{state['output_file_id']}/content")).text
    tokens = sum(
        json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
        for line in output.splitlines()
    )
    return tokens / wall


async def with_interactive(
    url: str, texts: list[str], args: argparse.Namespace
) -> tuple[float, list[float]]:
    stop, latencies = asyncio.Event(), []
    probe = Interactive(url, args.think_s, args.probe_tokens, stop, latencies)
    running = asyncio.create_task(probe.run())
    try:
        rate = await batch(url, texts, args.max_tokens)
    finally:
        stop.set()
        await running
    return rate, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--while-live", type=int, default=1, help="concurrency_while_live")
    parser.add_argument("--quiet-s", type=float, default=0.5, help="live_quiet_s")
    parser.add_argument(
        "--bound", type=float, default=1.5, help="live_latency_bound (0: null, a fixed limit)"
    )
    parser.add_argument("--probes", type=int, default=8, help="interactive requests alone")
    parser.add_argument("--probe-tokens", type=int, default=8)
    parser.add_argument("--think-s", type=float, default=1.0)
    parser.add_argument("--engine-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="direct/batch pairs, alternated")
    parser.add_argument(
        "--priority",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="priority_scheduling on the engine's model: batch lines pause for live requests",
    )
    parser.add_argument(
        "--interactive", action=argparse.BooleanOptionalAction, default=True, help="phases 2, 4"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=ROOT / ".pytest_cache/d/local-engine-models"
    )
    args = parser.parse_args()
    texts = prompts(args.prompts)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    engine_port, gateway_port = free_port(), free_port()
    engine_url, url = f"http://127.0.0.1:{engine_port}", f"http://127.0.0.1:{gateway_port}"
    threads = {"OMP_NUM_THREADS": str(args.engine_threads)}
    engine_cmd = [sys.executable, "-m", "local_engine", "serve", "--device", "cpu"]
    engine_cmd += ["--port", str(engine_port), "--cache-dir", str(args.cache_dir)]
    with process(engine_cmd, threads, f"{engine_url}/healthz", work / "engine.log"):
        model = httpx.get(f"{engine_url}/v1/models").json()["data"][0]["id"]
        (work / "policy.yaml").write_text(policy(engine_url, model, args))
        serve = [sys.executable, "-m", "gateway", "serve", "--port", str(gateway_port)]
        serve += ["--policy", str(work / "policy.yaml")]
        env = {"GATEWAY_DATA_DIR": str(work / "data"), "GATEWAY_REDIS_URL": ""}
        with process(serve, env, f"{url}/healthz", work / "gateway.log"):
            asyncio.run(direct(engine_url, model, texts[:4], 4, args.max_tokens))  # warm-up
            rounds = []
            for _ in range(args.rounds):  # alternated, so both sides see the same drift in load
                best = asyncio.run(direct(engine_url, model, texts, args.clients, args.max_tokens))
                rounds.append((best, asyncio.run(batch(url, texts, args.max_tokens))))
            report_throughput(args, rounds)
            if args.interactive:
                alone: list[float] = []
                idle = Interactive(url, args.think_s, args.probe_tokens, asyncio.Event(), alone)
                asyncio.run(idle.run(at_most=args.probes))
                shared, during = asyncio.run(with_interactive(url, texts, args))
                report_interactive(args, rounds, shared, alone, during)


def report_throughput(args: argparse.Namespace, rounds: list[tuple[float, float]]) -> None:
    print(f"{args.prompts} prompts, at most {args.max_tokens} tokens each; engine on CPU")
    print("| round | direct to the engine, c=32 (tokens/s) | batch via the gateway | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for i, (best, batched) in enumerate(rounds, start=1):
        print(f"| {i} | {best:.1f} | {batched:.1f} | {batched / best:.2f}x |")
    ratio = statistics.median(batched / best for best, batched in rounds)
    print(f"\nbatch / direct, median of {len(rounds)} rounds: {ratio:.2f}x (target >= 0.8x)")


def report_interactive(
    args: argparse.Namespace,
    rounds: list[tuple[float, float]],
    shared: float,
    alone: list[float],
    during: list[float],
) -> None:
    best = statistics.median(b for b, _ in rounds)
    p50_alone, p50_during = statistics.median(alone), statistics.median(during)
    print(
        f"\ninteractive: one client, {args.probe_tokens} tokens a request, {args.think_s:g} s "
        f"between; concurrency_while_live {args.while_live}, live_quiet_s {args.quiet_s:g}, "
        f"live_latency_bound {args.bound or 'null'}, priority_scheduling "
        f"{str(args.priority).lower()}"
    )
    print("| phase | requests | p50 s | batch tokens/s | batch / direct |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| alone | {len(alone)} | {p50_alone:.2f} | | |")
    print(
        f"| during the batch | {len(during)} | {p50_during:.2f} | {shared:.1f} | "
        f"{shared / best:.2f}x |"
    )
    print(f"\ninteractive p50 during the batch / alone: {p50_during / p50_alone:.2f}x")


if __name__ == "__main__":
    main()
