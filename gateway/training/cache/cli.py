"""``gateway cache ...``: operator tools for the semantic cache.

Mount with ``app.add_typer(gateway.training.cache.cli.app, name="cache")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.ml import guard
from gateway.semantic import STRICTNESS
from gateway.training import MissingTrainExtra
from gateway.training.cache import evaluate

app = typer.Typer(no_args_is_help=True, help="Semantic cache tools.")
out = Console(highlight=False)


@app.callback()
def _group() -> None:
    """Semantic cache tools."""


DEFAULT_THRESHOLDS = "0.70,0.75,0.78,0.80,0.82,0.85,0.88,0.90,0.92,0.95"


def _embed_texts(texts: list[str], model: str, progress: Progress) -> npt.NDArray[np.float32]:
    """Embed with the gateway's embedding stage (the same model and settings as serving)."""
    task = progress.add_task("loading model", total=None)
    from gateway.ml.embedder import Embedder

    embedder = Embedder.load(model)
    progress.update(task, description="embedding", total=len(texts), completed=0)
    batch = 64
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        vectors[idx] = embedder.embed_sync([texts[i] for i in idx], batch_size=batch)
        progress.advance(task, len(idx))
    return vectors


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )


def _guard(path: Path | None, strictness: str) -> guard.Guard:
    """The guard of ``strictness`` (its verifier cutoff), with the verifier at ``path``."""
    loaded = guard.Guard.load(path) if path else guard.default_guard()
    return loaded.with_cutoff(STRICTNESS[strictness].cutoff)


@app.command("eval")
def eval_pairs(
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs",
            exists=True,
            dir_okay=False,
            help="JSON Lines: text_a, text_b, label (1 = same question) or origin, similar.",
        ),
    ],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated cosine thresholds to report.")
    ] = DEFAULT_THRESHOLDS,
    target_precision: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Print the lowest threshold reaching this precision."),
    ] = None,
    no_guard: Annotated[
        bool, typer.Option("--no-guard", help="Score the threshold alone, without the guard.")
    ] = False,
    model: Annotated[str, typer.Option(help="Embedding model.")] = "all-MiniLM-L6-v2",
    strictness: Annotated[
        Literal["strict", "balanced"],
        typer.Option(help="The verifier cutoff of this cache.semantic.strictness."),
    ] = "strict",
    verifier: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Verifier artifact [default: the committed one]; see train-guard.",
        ),
    ] = None,
) -> None:
    """Precision, recall and F1 of the semantic hit decision (threshold and guard) on pairs:
    the first text is stored, the second is the lookup, a hit is right iff the label says the
    two are the same question."""
    try:
        points_at = sorted({float(t) for t in thresholds.split(",") if t.strip()})
    except ValueError:
        raise typer.BadParameter("thresholds must be numbers", param_hint="--thresholds") from None
    rows = evaluate.load_pairs(pairs)
    if not rows:
        raise typer.BadParameter("no pairs in the file", param_hint="--pairs")
    with _progress() as progress:
        vectors = evaluate.pair_vectors(rows, lambda texts: _embed_texts(texts, model, progress))
        scores = evaluate.pair_scores(vectors)
        task = progress.add_task("guard", total=len(rows))
        accepted = evaluate.decide(
            rows,
            scores,
            None if no_guard else _guard(verifier, strictness).check,
            progress=lambda n: progress.advance(task, n),
            vectors=vectors,
        )
    labels = np.array([r.label for r in rows])
    if target_precision is not None:  # a fine grid, so the answer is not limited to the table
        grid = [round(t, 3) for t in np.arange(0.5, 1.0001, 0.005)]
        points_at = sorted(set(points_at) | set(grid))
    points = evaluate.sweep(labels, scores, accepted, points_at)
    shown = {round(float(t), 4) for t in thresholds.split(",") if t.strip()}
    table = Table(
        title=f"{pairs.name}: {len(rows)} pairs, {int(labels.sum())} positive"
        + (" (threshold only)" if no_guard else " (threshold and guard)")
    )
    for column in ("threshold", "precision", "recall", "F1", "hits"):
        table.add_column(column, justify="right")
    for p in points:
        if p.threshold in shown:
            table.add_row(
                f"{p.threshold:.2f}",
                f"{p.precision:.3f}",
                f"{p.recall:.3f}",
                f"{p.f1:.3f}",
                str(p.hits),
            )
    out.print(table)
    if target_precision is not None:
        best = evaluate.lowest_threshold(points, target_precision)
        if best is None:
            out.print(f"no threshold reaches precision {target_precision:.2f}")
            raise typer.Exit(1)
        out.print(
            f"lowest threshold reaching precision {target_precision:.2f}: {best.threshold:.3f} "
            f"(precision {best.precision:.3f}, recall {best.recall:.3f}, F1 {best.f1:.3f})"
        )


@app.command("train-guard")
def train_guard_command(
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs",
            exists=True,
            dir_okay=False,
            help="JSON Lines: text_a, text_b, label (QQP format).",
        ),
    ],
    artifact: Annotated[Path, typer.Option("--out", help="Where to write the artifact (.npz).")],
    part: Annotated[
        str,
        typer.Option(help="Rows to train on: dev (even rows), test (odd rows) or all."),
    ] = "dev",
    threshold: Annotated[
        float, typer.Option(help="The cosine threshold the cutoff is chosen under.")
    ] = 0.75,
    members: Annotated[int, typer.Option(min=1, help="MLPs in the ensemble.")] = 8,
    folds: Annotated[
        int, typer.Option(min=1, help="Cross-validation folds for the cutoff (1: 0.5).")
    ] = 5,
    min_recall: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Recall the cutoff must keep.")
    ] = 0.64,
    model: Annotated[str, typer.Option(help="Embedding model.")] = "all-MiniLM-L6-v2",
) -> None:
    """Train the learned pair verifier of the meaning guard and write its artifact (needs the
    ``train`` extra: scikit-learn).

    The committed ``gateway/data/semantic_verifier.npz`` is
    ``gateway cache train-guard --pairs qqp_pairs_dev.jsonl --part dev --out
    gateway/data/semantic_verifier.npz``: the development half only; the odd rows stay for
    testing."""
    try:
        from gateway.training.cache import train_guard
    except MissingTrainExtra as error:
        out.print(f"error: {error}", markup=False)
        raise typer.Exit(1) from None

    rows = evaluate.load_pairs(pairs)
    if part != "all":
        rows = evaluate.split(rows, part)
    if not rows or all(r.label for r in rows):
        raise typer.BadParameter("need labelled pairs, positive and negative", param_hint="--pairs")
    with _progress() as progress:
        stored, query = evaluate.pair_vectors(rows, lambda t: _embed_texts(t, model, progress))
    embedder = {"model": model, "max_seq_length": 128, "quantized": False, "dim": stored.shape[1]}
    trained, idf, meta = train_guard.train(  # the recipe's other settings: train_guard
        rows,
        stored,
        query,
        embedder=embedder,
        threshold=threshold,
        members=members,
        folds=folds,
        min_recall=min_recall,
        log=out.print,
    )
    train_guard.save(artifact, trained, idf, meta)
    out.print(f"written {artifact} (cutoff {meta['cutoff']})")


@app.command("build-antonyms")
def build_antonyms_command(
    wordnet: Annotated[
        Path, typer.Option(help="A WordNet 3.0 dict directory (Debian: wordnet-base).")
    ] = Path("/usr/share/wordnet"),
    out_path: Annotated[
        Path | None, typer.Option("--out", help="The table to write (default: the shipped one).")
    ] = None,
) -> None:
    """Derive the meaning guard's antonym table from WordNet (see gateway.ml.opposites)."""
    from gateway.ml.opposites import DEFAULT_TABLE
    from gateway.training.cache import antonyms

    out_path = out_path or DEFAULT_TABLE
    opposites, exceptions = antonyms.build(wordnet)
    antonyms.write(opposites, exceptions, out_path)
    out.print(f"{len(opposites)} words, {len(exceptions)} irregular forms -> {out_path}")
