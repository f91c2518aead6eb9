"""Labelled routing data: reading, the deterministic train/validation split, cached embeddings.

Two formats (see ../shared/data/SOURCES.md), read into one row type:

- ``routellm_train.jsonl``: a prompt, the benchmark and subset it comes from, and the 0/1
  correctness of a weak and a strong model.
- ``alpacaeval_chat_train.jsonl``: a chat instruction and, per model, the GPT-4 judge's verdict
  against a fixed baseline answer. A row's ``weak_score`` is the mean verdict of the weak tier
  (``WEAK_TIER``: open 3B-65B chat models) and its ``strong_score`` that of the strong tier
  (``STRONG_TIER``: GPT-4, Claude 2, Mistral Medium). Means over tiers rather than one pair: a
  single verdict is a coin flip on many prompts, while the share of weak models that lose is the
  difficulty signal the data set offers (SOURCES.md). The benchmark is ``chat``, the subset the
  instruction's origin (oasst, koala, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gateway.ml.embedder import Embedder, Vectors

VALIDATION_FRACTION = 0.25
CHAT = "chat"
WEAK_TIER = (
    "alpaca-7b",
    "llama-2-7b-chat-hf",
    "vicuna-13b",
    "guanaco-65b",
    "minichat-1.5-3b",
    "llama-2-13b-chat-hf",
    "phi-2-dpo",
    "tulu-2-dpo-7b",
)
STRONG_TIER = ("gpt4_1106_preview", "gpt4", "gpt4_0314", "mistral-medium", "claude-2")


@dataclass(frozen=True, slots=True)
class LabelledRow:
    id: str
    benchmark: str
    subset: str
    prompt: str
    weak_score: float
    strong_score: float

    @property
    def needs_strong(self) -> bool:
        return self.strong_score > self.weak_score


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None


def load_labelled(path: Path, *, drop_contaminated: bool = True) -> list[LabelledRow]:
    """Rows with both scores, from either format; ``contaminated`` rows are dropped as
    RouteLLM's evaluation does (their answers may have leaked into the models' training data)."""
    rows = []
    for number, raw in enumerate(read_jsonl(path), 1):
        if "results" in raw and "instruction" in raw:
            rows.append(chat_row(raw, f"{path}:{number}"))
            continue
        if drop_contaminated and raw.get("contaminated"):
            continue
        missing = [k for k in ("id", "prompt", "weak_score", "strong_score") if k not in raw]
        if missing:
            raise ValueError(f"{path}:{number}: the row lacks {', '.join(missing)}")
        rows.append(
            LabelledRow(
                id=str(raw["id"]),
                benchmark=str(raw.get("benchmark", "all")),
                subset=str(raw.get("subset") or raw.get("benchmark", "all")),
                prompt=str(raw["prompt"]),
                weak_score=float(raw["weak_score"]),
                strong_score=float(raw["strong_score"]),
            )
        )
    return rows


def chat_row(raw: dict[str, Any], where: str) -> LabelledRow:
    """An AlpacaEval row: the tiers' mean verdicts (a missing verdict is left out of its mean)."""

    def tier_mean(models: Sequence[str]) -> float:
        verdicts = [
            float(v["win_vs_baseline"])
            for m in models
            if isinstance(v := raw["results"].get(m), dict) and v.get("win_vs_baseline") is not None
        ]
        if not verdicts:
            raise ValueError(f"{where}: no verdict of {', '.join(models)}")
        return sum(verdicts) / len(verdicts)

    return LabelledRow(
        id=str(raw.get("id", where)),
        benchmark=CHAT,
        subset=str(raw.get("dataset") or CHAT),
        prompt=str(raw["instruction"]),
        weak_score=tier_mean(WEAK_TIER),
        strong_score=tier_mean(STRONG_TIER),
    )


def id_hash(row_id: str) -> int:
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big")


def split(
    rows: Sequence[LabelledRow], validation_fraction: float = VALIDATION_FRACTION
) -> tuple[list[LabelledRow], list[LabelledRow]]:
    """(train, validation): within every (benchmark, subset) group, the rows whose id hashes
    lowest make up ``validation_fraction`` of the group (rounded). Deterministic, independent
    of the file's row order, and stratified by benchmark and MMLU subject."""
    groups: dict[tuple[str, str], list[LabelledRow]] = defaultdict(list)
    for row in rows:
        groups[row.benchmark, row.subset].append(row)
    held: set[str] = set()
    for group in groups.values():
        group.sort(key=lambda r: id_hash(r.id))
        held.update(r.id for r in group[: round(len(group) * validation_fraction)])
    train = [r for r in rows if r.id not in held]
    validation = [r for r in rows if r.id in held]
    return train, validation


def cached_embeddings(
    embedder: Embedder,
    texts: Sequence[str],
    cache_dir: Path | None,
    *,
    progress: bool = False,
) -> Vectors:
    """``embedder.embed_sync(texts)``, with every text's vector kept in ``cache_dir`` (one
    ``.npz`` per embedder signature, keyed by the text's hash), so that training, evaluation and
    benchmarks embed a prompt only once whatever subset of a data set they use."""
    if cache_dir is None:
        return embedder.embed_sync(texts, progress=progress)
    signature = json.dumps(embedder.signature, sort_keys=True).encode()
    path = cache_dir / f"embeddings-{hashlib.sha256(signature).hexdigest()[:16]}.npz"
    keys = np.array([hashlib.sha256(t.encode()).digest()[:16] for t in texts], "S16")
    stored_keys, stored = np.empty(0, "S16"), np.empty((0, embedder.dim), np.float32)
    if path.exists():
        with np.load(path) as z:
            stored_keys, stored = z["keys"], np.asarray(z["vectors"], np.float32)
    where = {k: i for i, k in enumerate(stored_keys.tolist())}
    first_of: dict[bytes, int] = {}
    for i, k in enumerate(keys.tolist()):
        if k not in where:
            first_of.setdefault(k, i)
    missing = list(first_of.values())
    if missing:
        fresh = embedder.embed_sync([texts[i] for i in missing], progress=progress)
        stored_keys = np.concatenate([stored_keys, keys[missing]])
        stored = np.concatenate([stored, fresh])
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=stored_keys, vectors=stored)
        tmp.replace(path)
        where = {k: i for i, k in enumerate(stored_keys.tolist())}
    out: Vectors = stored[[where[k] for k in keys.tolist()]]
    return out


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
