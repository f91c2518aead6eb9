"""Leave-one-source-out: how the head carries over to a kind of prompt it was never trained on.

For each source (MMLU, GSM8K, AlpacaEval chat) a head is fitted on the training splits of the
other two and scored on the left-out source's training split, beside a head fitted on all three
(whose figure for a source is the out-of-fold, cross-validated APGR of its training run). Only
training splits are read: the validation rows, and the chat test rows above all, stay unread.

    .venv/bin/python bench/router/loso.py

Embeddings are cached under .gateway/router-cache (the first run embeds every prompt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gateway.ml.embedder import Embedder
from gateway.training.router import metrics
from gateway.training.router.data import cached_embeddings, load_labelled, split
from gateway.training.router.evaluate import evaluate_rows
from gateway.training.router.train import fit

console = Console(highlight=False)


def main(data: list[Path]) -> None:
    rows = [row for path in data for row in load_labelled(path)]
    train, _ = split(rows)  # the held-out rows are never read here
    embedder = Embedder.load("all-MiniLM-L6-v2", max_seq_length=128, threads=0)
    vectors = cached_embeddings(
        embedder, [r.prompt for r in train], Path(".gateway/router-cache"), progress=True
    )
    sources = sorted({r.benchmark for r in train})
    table = Table(title="APGR by source (training splits only)", title_justify="left")
    for column in ("source", "n", "left out (trained on the others)", "all (cross-validated)"):
        table.add_column(column, justify="left" if column == "source" else "right")
    together = fit(train, vectors, embedder.signature).meta["cross_validated_apgr"]["stacked"]
    for source in sources:
        inside = [i for i, r in enumerate(train) if r.benchmark != source]
        outside = [i for i, r in enumerate(train) if r.benchmark == source]
        head = fit([train[i] for i in inside], vectors[inside], embedder.signature)
        results = evaluate_rows(head, [train[i] for i in outside], vectors[outside])
        left_out: metrics.Report = results[source][0]
        table.add_row(source, str(len(outside)), f"{left_out.apgr:.3f}", f"{together[source]:.3f}")
    console.print(table)


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data", type=Path, action="append", help="Labelled rows; repeatable.")
if __name__ == "__main__":
    args = parser.parse_args()
    main(
        args.data
        or [
            Path("../shared/data/routing/routellm_train.jsonl"),
            Path("../shared/data/routing/alpacaeval_chat_train.jsonl"),
        ]
    )
