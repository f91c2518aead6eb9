"""Training the cross-encoder verifier experiment (bench/cache/cross_encoder.py); needs torch.

The model: the embedder's own all-MiniLM-L6-v2 transformer reading both texts at once
(``[CLS] a [SEP] b [SEP]``, at most ``max_length`` word pieces), mean-pooled, then one linear
unit: P(same question). Initialised from the bundled weights, so nothing is downloaded.

Only the top ``train_layers`` transformer layers and the head are trained; the word, position
and type embeddings and the lower layers stay as shipped. That keeps training affordable on two
CPU cores (no backward pass through the frozen layers) and makes the trained part a small
artifact: the changed tensors, stored as float16 (:func:`save_delta`), which
bench/cache/cross_onnx.py applies to the bundled model and exports to ONNX.

Data: labelled pairs (QQP's development half); a held-out slice of them (``holdout``) stops the
training (best epoch by average precision among the candidates the cache would offer: cosine at
least the threshold and the rules passed) and chooses the cutoff. Each step sees each pair in a
random order, so the model learns that the two texts are interchangeable.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.training.cache.evaluate import Pair

__all__ = ["PairClassifier", "predict", "save_delta", "train"]

F32 = npt.NDArray[np.float32]


def _torch() -> Any:
    import torch

    return torch


def PairClassifier(model_dir: str | Path) -> Any:
    """A BERT model with a mean-pooling linear head: logits of P(same question)."""
    torch = _torch()
    from transformers import AutoModel

    class _PairClassifier(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir))
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(self.dropout(pooled)).squeeze(-1)

    return _PairClassifier()


def trainable_names(model: Any, train_layers: int) -> list[str]:
    """Names of the parameters trained (and stored in the delta): the top layers and the head."""
    layers = model.bert.config.num_hidden_layers
    keep = [f"bert.encoder.layer.{i}." for i in range(layers - train_layers, layers)]
    return [
        name
        for name, _ in model.named_parameters()
        if name.startswith("head.") or any(name.startswith(k) for k in keep)
    ]


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[Any]:
    return list(tokenizer.encode_batch([(a.strip(), b.strip()) for a, b in pairs]))


def batch_arrays(encodings: Sequence[Any]) -> dict[str, npt.NDArray[np.int64]]:
    """Pad a batch to its longest pair."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n], types[row, :n], mask[row, :n] = e.ids, e.type_ids, 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def predict(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch: int = 64) -> F32:
    """P(same question) for each pair (torch, eval mode)."""
    torch = _torch()
    model.eval()
    encodings = encode_pairs(tokenizer, pairs)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    out = np.empty(len(pairs), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            arrays = batch_arrays([encodings[i] for i in idx])
            logits = model(**{k: torch.from_numpy(v) for k, v in arrays.items()})
            out[idx] = torch.sigmoid(logits).numpy()
    return out


def average_precision(labels: npt.NDArray[np.bool_], scores: F32) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = labels[order].astype(np.float64)
    if hits.sum() == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def train(
    model_dir: str | Path,
    rows: Sequence[Pair],
    heldout: Sequence[Pair],
    heldout_candidates: npt.NDArray[np.bool_],
    *,
    max_length: int = 64,
    train_layers: int = 6,
    epochs: int = 3,
    batch: int = 32,
    lr: float = 5e-5,
    threads: int = 2,
    seed: int = 0,
    budget_s: float = 25 * 60,
    log: Callable[[str], None] = print,
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune on ``rows``; return (model at its best held-out epoch, tokenizer, meta)."""
    torch = _torch()
    from tokenizers import Tokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    model = PairClassifier(model_dir)
    names = set(trainable_names(model, train_layers))
    for name, param in model.named_parameters():
        param.requires_grad = name in names
    params = [p for n, p in model.named_parameters() if n in names]
    decay = [p for n, p in model.named_parameters() if n in names and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if n in names and p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    steps_per_epoch = math.ceil(len(rows) / batch)
    total = steps_per_epoch * epochs
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))),
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    held_pairs = [(p.query, p.stored) for p in heldout]
    held_labels = np.array([p.label for p in heldout])
    best: tuple[float, dict[str, Any], int] | None = None
    history = []
    started = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        model.train()
        order = list(range(len(rows)))
        rng.shuffle(order)
        # Batches of similar length (shuffled in chunks), so padding stays small.
        chunks = [order[i : i + batch * 50] for i in range(0, len(order), batch * 50)]
        batches: list[list[int]] = []
        for chunk in chunks:
            chunk.sort(key=lambda i: len(rows[i].stored) + len(rows[i].query))
            batches += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
        rng.shuffle(batches)
        running = 0.0
        for n, idx in enumerate(batches):
            pairs = [
                (rows[i].stored, rows[i].query)
                if rng.random() < 0.5
                else (rows[i].query, rows[i].stored)
                for i in idx
            ]
            arrays = batch_arrays(encode_pairs(tokenizer, pairs))
            labels = torch.tensor([float(rows[i].label) for i in idx])
            logits = model(**{k: torch.from_numpy(v) for k, v in arrays.items()})
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running += float(loss.detach())
            if (n + 1) % 50 == 0:
                log(
                    f"epoch {epoch + 1} step {n + 1}/{len(batches)} loss {running / 50:.4f} "
                    f"({time.perf_counter() - started:.0f} s)"
                )
                running = 0.0
            if time.perf_counter() - started > budget_s:
                break
        scores = predict(model, tokenizer, held_pairs)
        ap_all = average_precision(held_labels, scores)
        ap = average_precision(held_labels[heldout_candidates], scores[heldout_candidates])
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "ap": ap, "ap_all": ap_all, "elapsed_s": elapsed})
        log(
            f"epoch {epoch + 1}: held-out AP {ap:.4f} (candidates), {ap_all:.4f} (all), "
            f"{elapsed:.0f} s"
        )
        if best is None or ap > best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = (ap, state, epoch + 1)
        if time.perf_counter() - started > budget_s:
            log("time budget reached")
            break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    meta = {
        "max_length": max_length,
        "train_layers": train_layers,
        "epochs": epochs,
        "best_epoch": best[2],
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "train_pairs": len(rows),
        "heldout_pairs": len(heldout),
        "history": history,
        "train_s": round(time.perf_counter() - started, 1),
        "trainable": sorted(names),
    }
    return model, tokenizer, meta


def save_delta(path: Path, model: Any, names: Sequence[str], meta: dict[str, Any]) -> None:
    """The trained tensors as float16 (the rest is the bundled model), with ``meta``."""
    import json

    state = model.state_dict()
    arrays = {f"w:{n}": state[n].detach().numpy().astype(np.float16) for n in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    tmp.replace(path)


def read_meta(delta: Path) -> dict[str, Any]:
    import json

    with np.load(delta, allow_pickle=False) as data:
        meta: dict[str, Any] = json.loads(str(data["meta"]))
    return meta


def apply_delta(model: Any, delta: Path) -> None:
    """Load the trained tensors of ``delta`` into ``model`` (a :func:`PairClassifier`)."""
    torch = _torch()
    state = model.state_dict()
    with np.load(delta, allow_pickle=False) as data:
        for key in data.files:
            if key.startswith("w:"):
                state[key[2:]] = torch.from_numpy(np.asarray(data[key], np.float32))
    model.load_state_dict(state)
