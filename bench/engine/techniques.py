"""Benchmark: int8 weights, speculative decoding and the solo lane, each beside its comparison.

Three sections, each measured side by side in one run (the sides alternate, so both see the
same machine load), greedy throughout:

``quant``  fp32 against int8 weights: ``int8`` (weight-only) and ``int8_dynamic``.
           Quality on a fixed prompt set: the exact-match rate of the greedy answers, and the
           mean log-likelihood per token of the fp32 answers under each model (teacher-forced;
           the fp32 model's own figure is the anchor). Speed: completion tokens/s through the
           engine at c=1 and c=32.
``spec``   The engine with prompt-lookup speculation against the same engine without, on a
           copying set (copy a worked solution, fixing typos) and on plain chat prompts, at
           c=1 and c=8: tokens/s, acceptance rate, and whether every answer is identical.
``solo``   c=1: bare ``model.generate()`` against the engine's default path (the solo lane,
           speculation off and on) and against the continuous batch alone (``solo_max_batch
           -1``, the path a lone request took before the lane).
``batch``  c=32: the engine with the lane (its default) against the batch alone.

Prompts come from ../shared/data (evaluation data, not shipped): GSM8K worked solutions from
routing/routellm_train.jsonl for copying, Arena-Hard prompts for chat and quality.

    python bench/engine/techniques.py --cache-dir .pytest_cache/d/local-engine-models
    python bench/engine/techniques.py --device cuda --sections spec,solo   # a GPU machine
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.engine.run import Row, SequentialServer, drive, engine_call

DATA = Path(
    os.environ.get("GATEWAY_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
"""The evaluation data (../shared/data; $GATEWAY_SHARED_DATA elsewhere, a GPU machine say)."""
Messages = list[dict[str, str]]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as lines:
        for line in lines:
            yield json.loads(line)


def copying_prompts(count: int) -> list[Messages]:
    """Requests whose answers copy from their prompt, as summaries and edits do."""
    texts = (
        row["strong_response"]
        for row in _jsonl(DATA / "routing" / "routellm_train.jsonl")
        if row.get("strong_response") and 300 <= len(row["strong_response"]) <= 700
    )
    return [
        [{"role": "user", "content": f"Copy this solution, fixing any typos:\n\n{text}"}]
        for _, text in zip(range(count), texts, strict=False)
    ]


def chat_prompts(count: int, offset: int = 0) -> list[Messages]:
    rows = list(_jsonl(DATA / "prompts" / "arena_hard_v0.1_prompts.jsonl"))[offset:]
    short = (r["prompt"] for r in rows if len(r["prompt"]) <= 400)
    return [[{"role": "user", "content": p}] for _, p in zip(range(count), short, strict=False)]


# ---------------------------------------------------------------------------------- quality


def greedy_ids(model: Any, tokenizer: Any, messages: Messages, max_tokens: int) -> list[int]:
    import torch

    ids = _template(tokenizer, messages)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return [int(t) for t in out[0, len(ids) :]]


def mean_log_likelihood(model: Any, tokenizer: Any, messages: Messages, answer: list[int]) -> float:
    """Mean log-probability per token of ``answer`` after the prompt, teacher-forced."""
    import torch

    ids = _template(tokenizer, messages)
    with torch.inference_mode():
        logits = model(torch.tensor([ids + answer], device=model.device)).logits[0].float()
    logprobs = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
    picked = logprobs.gather(1, torch.tensor(answer, device=model.device)[:, None])
    return float(picked.mean())


def _template(tokenizer: Any, messages: Messages) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


def quality(base: Any, others: dict[str, Any], tokenizer: Any, max_tokens: int, count: int) -> str:
    """Exact-match rate of each model's greedy answers against fp32's, and the mean
    log-likelihood per token of fp32's answers under each (fp32's own: the anchor)."""
    prompts = chat_prompts(count)
    references = [greedy_ids(base, tokenizer, m, max_tokens) for m in prompts]
    lines = [
        f"Quality on {len(prompts)} Arena-Hard prompts, {max_tokens} greedy tokens each:",
        "",
        "| weights | greedy answers equal to fp32's | mean log-likelihood of fp32's answers |",
        "| --- | ---: | ---: |",
    ]
    for name, model in {"fp32": base, **others}.items():
        same = sum(
            greedy_ids(model, tokenizer, m, max_tokens) == r
            for m, r in zip(prompts, references, strict=True)
        )
        likelihood = statistics.mean(
            mean_log_likelihood(model, tokenizer, m, r)
            for m, r in zip(prompts, references, strict=True)
        )
        lines.append(f"| {name} | {same}/{len(prompts)} | {likelihood:.4f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ runs


async def side_by_side(
    sides: dict[str, Any], batches: list[tuple[str, list[Messages], int]], max_tokens: int
) -> list[Row]:
    """Each batch on every side in turn; ``sides`` are engines or a `SequentialServer`."""
    rows = []
    for label, batch, concurrency in batches:
        for name, side in sides.items():
            call = side if isinstance(side, SequentialServer) else engine_call(side, max_tokens)
            row = await drive(call, batch, concurrency, f"{label}: {name}")
            rows.append(row)
            print(
                f"{row.mode} c={concurrency}: {row.tokens} tokens in {row.wall_s:.1f} s, "
                f"{row.tokens_per_s:.2f} tok/s (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    return rows


def table(rows: list[Row], baseline: Callable[[Row], bool]) -> str:
    lines = [
        "| set, side | c | requests | tokens | wall s | tokens/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base: dict[tuple[str, int], float] = {}
    for row in rows:
        key = (row.mode.split(":")[0], row.concurrency)
        if baseline(row):
            base[key] = row.tokens_per_s
        ratio = row.tokens_per_s / base[key] if key in base else float("nan")
        lines.append(
            f"| {row.mode} | {row.concurrency} | {row.requests} | {row.tokens} "
            f"| {row.wall_s:.1f} | {row.tokens_per_s:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


async def answers(engine: Any, batch: list[Messages], max_tokens: int) -> list[str]:
    bodies = [{"messages": m, "max_tokens": max_tokens, "temperature": 0} for m in batch]
    return [(await engine.chat(b))["choices"][0]["message"]["content"] for b in bodies]


async def quant_section(args: argparse.Namespace, model: Any, tokenizer: Any) -> None:
    from local_engine.engine import LocalEngine
    from local_engine.quantize import quantize

    quantized = {q: quantize(copy.deepcopy(model), q) for q in ("int8", "int8_dynamic")}
    print(quality(model, quantized, tokenizer, args.max_tokens, args.quality_prompts), flush=True)
    sides = {
        name: LocalEngine.from_model(m, tokenizer, model_name="smol", max_running=64)
        for name, m in {"fp32": model, **quantized}.items()
    }
    for engine in sides.values():
        await engine.start()
    batches = [("chat", chat_prompts(4, 100), 1), ("chat", chat_prompts(32, 200), 32)]
    rows = await side_by_side(sides, batches, args.max_tokens)
    for engine in sides.values():
        await engine.aclose()
    print(table(rows, lambda r: r.mode.endswith("fp32")), flush=True)


async def spec_section(args: argparse.Namespace, model: Any, tokenizer: Any) -> None:
    from local_engine.engine import LocalEngine

    sides = {
        name: LocalEngine.from_model(model, tokenizer, model_name="smol", speculation=spec)
        for name, spec in (("speculation off", "off"), ("prompt lookup", "prompt_lookup"))
    }
    for engine in sides.values():
        await engine.start()
    copying, chat = copying_prompts(8), chat_prompts(8, 300)
    same = {
        label: await answers(sides["speculation off"], batch[:4], args.max_tokens)
        == await answers(sides["prompt lookup"], batch[:4], args.max_tokens)
        for label, batch in (("copying", copying), ("chat", chat))
    }
    print(f"identical greedy answers (4 per set): {same}", flush=True)
    spec = sides["prompt lookup"]
    rows = []
    for label, batch in (("copying", copying), ("chat", chat)):
        start = dict(spec.metrics.totals)
        levels = [(label, batch[:4], 1), (label, batch, 8)]
        rows += await side_by_side(sides, levels, args.max_tokens)
        drafted = spec.metrics.totals["drafted"] - start["drafted"]
        accepted = spec.metrics.totals["accepted"] - start["accepted"]
        print(
            f"{label}: acceptance {accepted}/{drafted} = {accepted / max(drafted, 1):.2f}",
            flush=True,
        )
    for engine in sides.values():
        await engine.aclose()
    print(table(rows, lambda r: r.mode.endswith("speculation off")), flush=True)


async def solo_section(args: argparse.Namespace, model: Any, tokenizer: Any) -> None:
    from local_engine.engine import LocalEngine

    def engine(**options: Any) -> Any:
        return LocalEngine.from_model(model, tokenizer, model_name="smol", **options)

    sides: dict[str, Any] = {
        "generate()": SequentialServer(model, tokenizer, args.max_tokens),
        "batch only (before)": engine(solo_max_batch=-1),
        "solo lane, no speculation": engine(speculation="off"),
        "solo lane + prompt lookup": engine(),
    }
    engines = [s for s in sides.values() if not isinstance(s, SequentialServer)]
    for e in engines:
        await e.start()
    batches = [("chat", chat_prompts(4, 400), 1), ("copying", copying_prompts(12)[8:], 1)]
    rows = await side_by_side(sides, batches, args.max_tokens)
    for e in engines:
        await e.aclose()
    print(table(rows, lambda r: r.mode.endswith("generate()")), flush=True)


async def batch_section(args: argparse.Namespace, model: Any, tokenizer: Any) -> None:
    """c=32: the lane must not cost the batch (it takes the first request, then hands it over)."""
    from local_engine.engine import LocalEngine

    sides = {
        name: LocalEngine.from_model(model, tokenizer, model_name="smol", **options)
        for name, options in (("batch only", {"solo_max_batch": -1}), ("with solo lane", {}))
    }
    for engine in sides.values():
        await engine.start()
    rows = await side_by_side(sides, [("chat", chat_prompts(32, 100), 32)], args.max_tokens)
    for engine in sides.values():
        await engine.aclose()
    print(table(rows, lambda r: r.mode.endswith("batch only")), flush=True)


SECTIONS = {
    "quant": quant_section,
    "spec": spec_section,
    "solo": solo_section,
    "batch": batch_section,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quality-prompts", type=int, default=16)
    parser.add_argument("--sections", default="solo,spec,quant")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from local_engine import models

    if args.threads:
        torch.set_num_threads(args.threads)
    source = models.resolve(args.model)
    device = models.pick_device(args.device)
    model, tokenizer = models.load_pretrained(
        models.local_path(source, args.cache_dir), device, models.pick_dtype(args.dtype, device)
    )
    print(
        f"# {args.model} on {device}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"max_tokens {args.max_tokens}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    for name in args.sections.split(","):
        print(f"\n## {name}\n", flush=True)
        await SECTIONS[name](args, model, tokenizer)


if __name__ == "__main__":
    asyncio.run(main())
