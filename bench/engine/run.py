"""Benchmark: the local engine (continuous batching) against sequential ``model.generate()``.

Both sides run the same model in the same process and are driven the same way: ``c``
closed-loop clients (each sends its next request when the previous one has finished) work
through the same list of distinct prompts, greedy (so both sides generate the same tokens),
``--max-tokens`` tokens at most. The sequential side is a server that runs one ``generate()``
at a time, so its time to first token includes the wait behind the requests ahead of it, as a
client would see it. At each concurrency the two sides run one after the other, so both sides
of a ratio see about the same machine load.

Reported per concurrency: aggregate completion tokens/s (all tokens / wall time), TTFT p50
(submission to first generated token), and the engine's ratios over sequential.

    python bench/engine/run.py                      # CPU, smollm2-135m-instruct
    python bench/engine/run.py --device cuda --concurrency 1,8,32,128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TOPICS = [
    "the sea",
    "volcanoes",
    "the moon",
    "honey bees",
    "trains",
    "the desert",
    "a lighthouse",
    "chess",
    "rain forests",
    "glaciers",
    "the violin",
    "bread baking",
    "owls",
    "bicycles",
    "the printing press",
    "coral reefs",
    "thunderstorms",
    "a small village",
    "robots",
    "the history of tea",
    "penguins",
    "mountain climbing",
    "the stars",
    "an old library",
    "autumn leaves",
    "the first airplane",
    "whales",
    "a busy market",
    "snowflakes",
    "the pyramids",
    "a river journey",
    "a clockmaker",
    "the northern lights",
    "sunflowers",
    "a submarine",
    "the wind",
    "a fox in winter",
    "paper boats",
    "the ocean floor",
    "a castle",
]


def prompts(count: int, offset: int) -> list[list[dict[str, str]]]:
    return [
        [
            {
                "role": "user",
                "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}"
                f" (story number {offset + i}).",
            }
        ]
        for i in range(count)
    ]


@dataclass
class Result:
    tokens: int
    ttft_s: float


@dataclass
class Row:
    mode: str
    concurrency: int
    requests: int
    tokens: int
    wall_s: float
    ttft_p50_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


async def drive(call: Any, batch: list[list[dict[str, str]]], concurrency: int, mode: str) -> Row:
    """``concurrency`` closed-loop clients working through ``batch``."""
    todo = list(enumerate(batch))
    results: list[Result] = []

    async def client() -> None:
        while todo:
            _, messages = todo.pop(0)
            results.append(await call(messages))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return Row(
        mode,
        concurrency,
        len(results),
        sum(r.tokens for r in results),
        wall,
        statistics.median(r.ttft_s for r in results),
    )


class SequentialServer:
    """One ``model.generate()`` at a time, in a worker thread, in arrival order."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int) -> None:
        self._model, self._tokenizer, self._max_tokens = model, tokenizer, max_tokens
        self._lock = asyncio.Lock()

    async def __call__(self, messages: list[dict[str, str]]) -> Result:
        submitted = time.perf_counter()
        async with self._lock:
            first, tokens = await asyncio.to_thread(self._generate, messages)
        return Result(tokens, first - submitted)

    def _generate(self, messages: list[dict[str, str]]) -> tuple[float, int]:
        import torch

        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        streamer = FirstTokenStreamer()
        with torch.inference_mode():
            out = self._model.generate(
                torch.tensor([ids], device=self._model.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self._model.device),
                max_new_tokens=self._max_tokens,
                do_sample=False,
                pad_token_id=self._tokenizer.eos_token_id,
                streamer=streamer,
            )
        return streamer.first or time.perf_counter(), out.shape[1] - len(ids)


class FirstTokenStreamer:
    """A generate() streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.first: float | None = None
        self._calls = 0
        self._lock = threading.Lock()

    def put(self, value: Any) -> None:
        with self._lock:
            self._calls += 1  # the first call carries the prompt
            if self._calls == 2 and self.first is None:
                self.first = time.perf_counter()

    def end(self) -> None:
        pass


def engine_call(engine: Any, max_tokens: int) -> Any:
    async def call(messages: list[dict[str, str]]) -> Result:
        submitted, first, tokens = time.perf_counter(), None, 0
        body = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async for chunk in engine.chat_stream(body):
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
        return Result(tokens, (first or time.perf_counter()) - submitted)

    return call


def markdown(rows: list[Row]) -> str:
    sequential = {r.concurrency: r for r in rows if r.mode == "sequential generate()"}
    lines = [
        "| concurrency | mode | requests | completion tokens | wall s | tokens/s | TTFT p50 s "
        "| tokens/s ratio | TTFT ratio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(rows, key=lambda r: (r.concurrency, r.mode != "sequential generate()")):
        base = sequential[row.concurrency]
        lines.append(
            f"| {row.concurrency} | {row.mode} | {row.requests} | {row.tokens} | {row.wall_s:.1f} "
            f"| {row.tokens_per_s:.1f} | {row.ttft_p50_s:.2f} "
            f"| {row.tokens_per_s / base.tokens_per_s:.2f}x "
            f"| {row.ttft_p50_s / base.ttft_p50_s:.2f}x |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--requests-per-client",
        type=int,
        default=1,
        help="requests per client (at least 4 in all per concurrency)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for both sides (default: torch's choice)",
    )
    args = parser.parse_args()

    import torch

    from local_engine.engine import LocalEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    engine = await asyncio.to_thread(
        LocalEngine.load,
        args.model,
        device=args.device,
        dtype=args.dtype,
        cache_dir=args.cache_dir,
        max_running=max(64, max(levels)),
    )
    model, tokenizer = engine.backend._model, engine._tokenizer
    load = os.getloadavg()
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu"
    print(
        f"# {args.model} on {args.device} ({device_name}),"
        f" torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores,"
        f" load average at start {load[0]:.2f}, max_tokens {args.max_tokens}",
        flush=True,
    )

    rows: list[Row] = []
    sequential = SequentialServer(model, tokenizer, args.max_tokens)
    async with engine:
        await sequential(prompts(1, 10_000)[0])  # warm-up
        await engine.chat({"messages": prompts(1, 20_000)[0], "max_tokens": 4})
        offset = 0
        # Interleaved, so both sides of a ratio see the same machine load.
        for c in levels:
            batch = prompts(max(4, c * args.requests_per_client), offset)
            offset += len(batch)
            for mode, call in (
                ("sequential generate()", sequential),
                ("engine (continuous batching)", engine_call(engine, args.max_tokens)),
            ):
                row = await drive(call, batch, c, mode)
                rows.append(row)
                print(
                    f"{mode} c={c}: {row.tokens} tokens, {row.tokens_per_s:.1f} tok/s,"
                    f" TTFT p50 {row.ttft_p50_s:.2f} s, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    print()
    print(markdown(rows))


if __name__ == "__main__":
    asyncio.run(main())
