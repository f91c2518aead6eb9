"""classify() beyond the embedding: this tree's head against an earlier commit's, side by side.

Each side runs in its own process (the two trees both call their package ``gateway``), in
alternating rounds so that the machine's load falls on both alike, on the same prompts and the
same embeddings; the p50 of each side over all rounds, and their ratio, per kind of prompt.

    .venv/bin/python bench/router/latency_ab.py [--base 5662e26] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = {
    "short chat": "Write a haiku about autumn leaves.",
    "chat instruction": "Give me three tips for keeping houseplants alive in a dark flat.",
    "multiple choice": "Which of the following is NOT a function of the liver?\nA. Producing "
    "bile\nB. Storing glycogen\nC. Producing insulin\nD. Detoxifying drugs\nAnswer:",
    "word problem": "A baker sells 12 loaves a day at $3 each and 8 cakes at $15 each. How much "
    "does she make in a week?",
    "4,432-character code": "Explain this code:\n```python\n"
    + "x = compute(x, 3) * 2\n" * 200
    + "```",
}
_CHILD = """
import json, sys, time, statistics
import numpy as np
from gateway.ml.classifier import Classifier, features_of
prompts = json.loads(sys.argv[1]); vectors = np.load(sys.argv[2]); repeat = int(sys.argv[3])
classifier = Classifier.load()
out = {}
for (name, text), vector in zip(prompts.items(), vectors):
    messages = [{"role": "user", "content": text}]
    for _ in range(50):
        classifier.classify(vector, features_of(messages))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        classifier.classify(vector, features_of(messages))
        samples.append(time.perf_counter() - start)
    out[name] = samples
print(json.dumps(out))
"""


def _tree(base: str, into: Path) -> Path:
    """The ``gateway`` package of commit ``base``, unpacked under ``into``."""
    archive = into / "base.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", base, "gateway"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _run(pythonpath: Path, vectors: Path, repeat: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(PROMPTS), str(vectors), str(repeat)],
        env=env,
        cwd=pythonpath,
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, list[float]] = json.loads(result.stdout)
    return found


def main(base: str, rounds: int, repeat: int) -> None:
    from gateway.ml.embedder import Embedder

    embedder = Embedder.load(threads=0)
    with tempfile.TemporaryDirectory() as tmp:
        vectors = Path(tmp) / "vectors.npy"
        np.save(vectors, embedder.embed_sync(list(PROMPTS.values())))
        old = _tree(base, Path(tmp))
        samples: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
        for _ in range(rounds):
            for side, path in (("base", old), ("this", ROOT)):
                for name, got in _run(path, vectors, repeat).items():
                    samples[side].setdefault(name, []).extend(got)
    print(f"load average {os.getloadavg()[0]:.1f}; p50 of classify() per request, ms")
    print(f"{'prompt':<24}{base:>10}{'this tree':>12}{'ratio':>8}")
    for name in PROMPTS:
        a = statistics.median(samples["base"][name]) * 1e3
        b = statistics.median(samples["this"][name]) * 1e3
        print(f"{name:<24}{a:>10.3f}{b:>12.3f}{b / a:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="5662e26", help="The commit to compare with.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=300, help="Calls per prompt per round.")
    args = parser.parse_args()
    main(args.base, args.rounds, args.repeat)
