"""Batch use of the classifier: reading prompt files, scoring them, evaluating routing quality
on labelled rows, and the prompts ``calibrate`` projects costs on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.ml.classifier import Classifier, Features, Judgement, features_of, features_of_text
from gateway.ml.text import message_text, request_text
from gateway.training.router import metrics
from gateway.training.router.data import LabelledRow, read_jsonl

if TYPE_CHECKING:
    from gateway.ml.embedder import Embedder, Vectors
    from gateway.ml.head import Head
    from gateway.training.router.calibrate import Prompt


@dataclass(frozen=True, slots=True)
class PromptRow:
    id: Any
    text: str
    """What is embedded: the prompt, or the last user message."""
    features: Features
    all_text: str
    """Every message's text, for counting input tokens."""
    messages: int
    has_images: bool
    raw: Mapping[str, Any]


def read_prompts(path: Path) -> list[PromptRow]:
    """Rows ``{id, prompt}`` or ``{id, messages[, tools]}`` (OpenAI chat shape)."""

    rows = []
    for number, raw in enumerate(read_jsonl(path), 1):
        if isinstance(raw.get("messages"), list) and raw["messages"]:
            messages = raw["messages"]
            features = features_of(messages, has_tools=bool(raw.get("tools")))
            text, all_text = request_text(messages), "\n".join(message_text(m) for m in messages)
            images = any(
                isinstance(m.get("content"), list)
                and any(p.get("type") == "image_url" for p in m["content"] if isinstance(p, dict))
                for m in messages
            )
            rows.append(
                PromptRow(
                    raw.get("id", number), text, features, all_text, len(messages), images, raw
                )
            )
        elif isinstance(raw.get("prompt"), str):
            text = raw["prompt"]
            rows.append(
                PromptRow(raw.get("id", number), text, features_of_text(text), text, 1, False, raw)
            )
        elif "difficulty" not in raw:
            raise ValueError(f"{path}:{number}: a row needs 'prompt' or 'messages'")
        else:
            rows.append(
                PromptRow(raw.get("id", number), "", features_of_text(""), "", 0, False, raw)
            )
    return rows


def load_classifier(
    head: Path | None, model: str | None, *, threads: int = 0
) -> tuple[Classifier, Embedder]:
    """The classifier and the embedder its head was trained with (``model`` overrides the
    model id or path, e.g. a local copy of the same model)."""
    from gateway.ml.embedder import Embedder

    classifier = Classifier.load(head)
    signature = classifier.embedder_signature
    embedder = Embedder.load(
        model or str(signature["model"]),
        max_seq_length=int(signature["max_seq_length"]),
        quantize=bool(signature["quantized"]),
        threads=threads,
    )
    if model is None:
        classifier.check_embedder(embedder.signature)
    return classifier, embedder


def score_prompts(
    classifier: Classifier,
    embedder: Embedder,
    prompts: Sequence[PromptRow],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> list[Judgement]:
    vectors = embedder.embed_sync([p.text for p in prompts], batch_size, progress=progress)
    return classifier.classify_many(vectors, [p.features for p in prompts])


def evaluate_rows(
    head: Head, rows: Sequence[LabelledRow], vectors: Vectors
) -> dict[str, tuple[metrics.Report, metrics.Report]]:
    """Per benchmark (and ``all`` when there are several): (the head's report, random's)."""
    features = np.stack([features_of_text(r.prompt).vector() for r in rows])
    scores = head.difficulty(vectors, features, [r.prompt for r in rows])
    weak = np.array([r.weak_score for r in rows])
    strong = np.array([r.strong_score for r in rows])
    benchmarks = np.array([r.benchmark for r in rows])
    names = sorted(set(benchmarks.tolist()))
    out = {}
    for name in [*names, *(["all"] if len(names) > 1 else [])]:
        mask = benchmarks == name if name != "all" else np.ones(len(rows), bool)
        out[name] = (
            metrics.report(scores[mask], weak[mask], strong[mask]),
            metrics.random_report(weak[mask], strong[mask]),
        )
    return out


@cache
def _tokenizer() -> Any:
    """The MiniLM WordPiece tokenizer without truncation (tiktoken needs a download)."""
    from tokenizers import Tokenizer

    from gateway.ml.embedder import DEFAULT_MODEL, resolve_model

    path = Path(resolve_model(DEFAULT_MODEL)) / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: Sequence[str]) -> tuple[list[int], str]:
    """Tokens per text and how they were counted."""
    try:
        encoded = _tokenizer().encode_batch(list(texts), add_special_tokens=False)
    except Exception:  # no tokenizer file: fall back to the gateway's own estimate
        return [len(t.encode()) // 4 + 1 for t in texts], "estimated as UTF-8 bytes / 4"
    return [len(e.ids) for e in encoded], "counted with the all-MiniLM-L6-v2 tokenizer"


def calibration_prompts(
    path: Path,
    head: Path | None,
    model: str | None,
    output_tokens: int,
    *,
    progress: bool = False,
) -> tuple[list[Prompt], str]:
    """The prompts of a file with their difficulty (scored now unless the rows carry one) and
    token counts (``input_tokens``/``output_tokens`` from the rows when given)."""
    from gateway.training.router.calibrate import Prompt

    rows = read_prompts(path)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    judged = all("difficulty" in r.raw for r in rows)
    if judged:
        judgements = [
            Judgement(float(r.raw["difficulty"]), str(r.raw.get("category", r.features.category)))
            for r in rows
        ]
    else:
        classifier, embedder = load_classifier(head, model)
        judgements = score_prompts(classifier, embedder, rows, progress=progress)
    counted, how = count_tokens([r.all_text for r in rows])
    if all("input_tokens" in r.raw for r in rows):
        how = "from the rows' input_tokens"
    prompts = []
    for row, judgement, tokens in zip(rows, judgements, counted, strict=True):
        if not row.all_text and "input_tokens" not in row.raw:
            raise ValueError(
                f"{path}: the row {row.id!r} has neither text nor input_tokens to price it by"
            )
        if "input_tokens" in row.raw:
            tokens = int(row.raw["input_tokens"])
        elif row.messages:
            tokens += 4 * row.messages  # per-message overhead of chat templates
        prompts.append(
            Prompt(
                difficulty=judgement.difficulty,
                category=judgement.category,
                input_tokens=tokens,
                output_tokens=int(row.raw.get("output_tokens", output_tokens)),
                prompt_tokens_estimate=len(row.all_text.encode()) // 4,
                has_tools=row.features.has_tools,
                has_images=row.has_images,
            )
        )
    return prompts, how
