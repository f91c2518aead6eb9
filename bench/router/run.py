"""Router benchmark: routing quality on the held-out validation split (the committed head vs a
random router), classify() latency beyond the embedding, and the embedding's own latency in
fp32 and int8 side by side (the figures behind the choice of fp32 in gateway/embed.py).

    .venv/bin/python bench/router/run.py [--data ../shared/data/routing/routellm_train.jsonl
        --data ../shared/data/routing/alpacaeval_chat_train.jsonl]

Embeddings of the data set are cached under .gateway/router-cache, so a second run is quick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gateway.ml.classifier import Classifier, features_of, features_of_text
from gateway.ml.embedder import Embedder
from gateway.ml.text import request_text
from gateway.training.router import metrics
from gateway.training.router.cli import results_table
from gateway.training.router.data import cached_embeddings, load_labelled, split
from gateway.training.router.evaluate import evaluate_rows

console = Console(highlight=False)
SHORT = [
    "How do I reverse a list in Python?",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain why the sky is blue in two sentences.",
]


def p50_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def quality(data: list[Path], classifier: Classifier, embedder: Embedder) -> None:
    rows = [row for path in data for row in load_labelled(path)]
    _, validation = split(rows)
    vectors = cached_embeddings(
        embedder, [r.prompt for r in validation], Path(".gateway/router-cache"), progress=True
    )
    results = evaluate_rows(classifier.head, validation, vectors)
    console.print(results_table(results, title="validation split (never used in training)"))
    # how much of that is noise: a bootstrap over the validation rows
    features = np.stack([features_of_text(r.prompt).vector() for r in validation])
    scores = classifier.head.difficulty(vectors, features, [r.prompt for r in validation])
    rng = np.random.default_rng(0)
    for name in sorted({r.benchmark for r in validation}):
        index = np.array([i for i, r in enumerate(validation) if r.benchmark == name])
        weak = np.array([validation[i].weak_score for i in index])
        strong = np.array([validation[i].strong_score for i in index])
        samples = []
        for _ in range(1000):
            pick = rng.integers(0, len(index), len(index))
            samples.append(metrics.report(scores[index][pick], weak[pick], strong[pick]).apgr)
        low, high = np.nanpercentile(samples, [2.5, 97.5])
        console.print(f"{name}: APGR 95% bootstrap interval {low:.3f} to {high:.3f}")


def classify_latency(classifier: Classifier, embedder: Embedder) -> None:
    messages = [{"role": "user", "content": t} for t in SHORT]
    vectors = embedder.embed_sync([request_text([m]) for m in messages])
    long_text = "Explain this code:\n```python\n" + "x = compute(x, 3) * 2\n" * 200 + "```"
    long_vector = embedder.embed_sync([long_text])[0]
    choice_text = (
        "Which of the following is NOT a function of the liver?\nA. Producing bile\n"
        "B. Storing glycogen\nC. Producing insulin\nD. Detoxifying drugs\nAnswer:"
    )
    choice_vector = embedder.embed_sync([choice_text])[0]
    problem_text = (
        "A baker sells 12 loaves a day at $3 each and 8 cakes at $15 each. How much does she "
        "make in a week?"
    )
    problem_vector = embedder.embed_sync([problem_text])[0]

    def short_call() -> None:
        for m, v in zip(messages, vectors, strict=True):
            classifier.classify(v, features_of([m], has_tools=False))

    def long_call() -> None:
        classifier.classify(long_vector, features_of([{"role": "user", "content": long_text}]))

    def choice_call() -> None:
        classifier.classify(choice_vector, features_of([{"role": "user", "content": choice_text}]))

    def problem_call() -> None:
        message = {"role": "user", "content": problem_text}
        classifier.classify(problem_vector, features_of([message]))

    for _ in range(50):
        short_call()
        choice_call()
    choice = p50_ms(choice_call, 1000)
    problem = p50_ms(problem_call, 1000)
    short = p50_ms(short_call, 500) / len(messages)
    long = p50_ms(long_call, 500)
    v = vectors[0]
    f = features_of(messages[:1])
    head_only = p50_ms(lambda: classifier.classify(v, f), 2000)
    console.print(
        f"classify() p50 beyond the embedding: {short:.3f} ms per short request "
        f"(features {short - head_only:.3f} ms + head {head_only:.3f} ms); "
        f"{long:.3f} ms for a {len(long_text)}-character prompt; {choice:.3f} ms for a "
        f"multiple-choice question (the terms part runs); {problem:.3f} ms for a word problem "
        "(the word-problem features run)"
    )


def embedding_latency(repeat: int) -> None:
    data_texts = SHORT * 8
    table = Table(title="all-MiniLM-L6-v2, max_seq_length 128", title_justify="left")
    columns = ("variant", "threads", "single short p50", "batch of 32", "32 concurrent embed()")
    for column in columns:
        table.add_column(column, justify="right")
    fp32_vectors = None
    cosines = None
    mmlu = [r.prompt for r in random.Random(0).sample(load_labelled(ARGS.data[0]), 200)]
    for quantize in (False, True):
        embedder = Embedder.load(quantize=quantize, threads=1, max_batch=32)
        for t in SHORT:
            embedder.embed_sync([t])
        single = p50_ms(lambda e=embedder: e.embed_sync([SHORT[0]]), repeat)
        batch = p50_ms(lambda e=embedder: e.embed_sync(data_texts, 32), max(3, repeat // 10))

        async def concurrent(e: Embedder = embedder) -> float:
            start = time.perf_counter()
            await asyncio.gather(*(e.embed([t]) for t in data_texts))
            elapsed = time.perf_counter() - start
            await e.aclose()
            return elapsed

        together = asyncio.run(concurrent())
        table.add_row(
            "int8" if quantize else "fp32",
            "1",
            f"{single:.1f} ms",
            f"{len(data_texts) / batch * 1e3:.0f} queries/s",
            f"{len(data_texts) / together:.0f} queries/s",
        )
        vectors = Embedder.load(quantize=quantize, threads=0).embed_sync(mmlu)
        if fp32_vectors is None:
            fp32_vectors = vectors
        else:
            cosines = (vectors * fp32_vectors).sum(axis=1)
    console.print(table)
    if cosines is not None:
        console.print(
            f"cosine of int8 to fp32 vectors over 200 MMLU/GSM8K prompts: mean "
            f"{cosines.mean():.3f}, 5th percentile {np.percentile(cosines, 5):.3f}, "
            f"min {cosines.min():.3f}"
        )


def main() -> None:
    console.print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    classifier = Classifier.load(ARGS.head)
    signature = classifier.embedder_signature
    embedder = Embedder.load(
        str(signature["model"]),
        max_seq_length=int(signature["max_seq_length"]),
        quantize=bool(signature["quantized"]),
        threads=0,
    )
    quality(ARGS.data, classifier, embedder)
    classify_latency(classifier, embedder)
    if not ARGS.skip_embedding:
        embedding_latency(ARGS.repeat)


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument(
    "--data",
    type=Path,
    action="append",
    help="Labelled rows; repeatable [default: the RouteLLM and AlpacaEval chat files].",
)
parser.add_argument("--head", type=Path, default=None)
parser.add_argument("--repeat", type=int, default=50, help="Samples per latency figure.")
parser.add_argument("--skip-embedding", action="store_true", help="No embedding latency.")
ARGS = parser.parse_args()
ARGS.data = ARGS.data or [
    Path("../shared/data/routing/routellm_train.jsonl"),
    Path("../shared/data/routing/alpacaeval_chat_train.jsonl"),
]

if __name__ == "__main__":
    main()
