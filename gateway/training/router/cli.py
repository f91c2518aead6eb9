"""``gateway router``: train the difficulty head, score prompts, evaluate routing, calibrate the
policy's threshold.

Mounted by ``gateway.cli`` as ``app.add_typer(router_app, name="router")``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from gateway.ml.classifier import DEFAULT_HEAD
from gateway.training import MissingTrainExtra
from gateway.training.router.data import VALIDATION_FRACTION
from gateway.training.router.traffic import HOLDOUT

if TYPE_CHECKING:
    from gateway.ml.head import Head
    from gateway.settings import Settings
    from gateway.training.router.calibrate import Prompt
    from gateway.training.router.traffic import TrafficRows

router_app = typer.Typer(
    no_args_is_help=True,
    help="Train, evaluate and calibrate the difficulty classifier that routes requests.",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

HeadOption = Annotated[
    Path | None,
    typer.Option("--head", help="Head artifact [default: the committed gateway/data one]."),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Embedding model id or path [default: the one the head was trained with].",
        show_default=False,
    ),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where embeddings of data sets are cached [default: $GATEWAY_DATA_DIR/router-cache].",
        show_default=False,
    ),
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]


def _cache_dir(given: Path | None) -> Path:
    return given or Path(os.environ.get("GATEWAY_DATA_DIR", ".gateway")) / "router-cache"


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


DataOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--data",
        help="Labelled rows (routellm_train.jsonl, alpacaeval_chat_train.jsonl); repeatable.",
    ),
]
FromLedger = Annotated[
    bool,
    typer.Option(
        "--from-ledger",
        help="Labels from the gateway's own traffic (shadow comparisons, feedback), from the "
        "labels store beside its ledger (GATEWAY_REDIS_URL or GATEWAY_DATA_DIR, as for serve).",
    ),
]
SinceOption = Annotated[str, typer.Option(help="With --from-ledger: labels from (90d, 24h...).")]
HoldoutOption = Annotated[
    float, typer.Option(help="With --from-ledger: the newest share of labels held out.")
]


@router_app.command()
def train(
    data: DataOption = None,
    from_ledger: FromLedger = False,
    since: SinceOption = "90d",
    holdout: HoldoutOption = HOLDOUT,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the head artifact (.npz) [default: gateway/data/router_head.npz;"
            " with --from-ledger, the deployment's $GATEWAY_DATA_DIR/router/head.npz, which "
            "serve loads instead of the shipped head].",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="Embedding model id or path.")] = "all-MiniLM-L6-v2",
    max_seq_length: Annotated[int, typer.Option(help="Tokens embedded per prompt.")] = 128,
    quantize: Annotated[bool, typer.Option(help="Embed with int8 dynamic quantization.")] = False,
    validation_fraction: Annotated[
        float, typer.Option(help="Held out per benchmark and subject, by id hash; 0 trains on all.")
    ] = VALIDATION_FRACTION,
    cache_dir: CacheOption = None,
    no_progress: NoProgress = False,
) -> None:
    """Train the difficulty head on labelled rows (and the gateway's own labels) and write it."""
    from gateway.ml.embedder import Embedder
    from gateway.training.router.data import cached_embeddings, load_labelled, split

    try:
        from gateway.training.router.train import fit, prompt_dense
    except MissingTrainExtra as error:
        raise _fail(str(error)) from None

    if not data and not from_ledger:
        raise _fail("give --data, --from-ledger, or both", 2)
    rows = [row for path in data or [] for row in load_labelled(path)]
    train_rows, held = split(rows, validation_fraction) if validation_fraction > 0 else (rows, [])
    if data and not train_rows:
        raise _fail(f"{', '.join(map(str, data))}: no usable rows")
    recent, newest = _traffic(since, holdout) if from_ledger else (None, None)
    err.print(f"{len(train_rows)} training rows, {len(held)} held out for validation")
    embedder = Embedder.load(model, max_seq_length=max_seq_length, quantize=quantize, threads=0)
    vectors = cached_embeddings(
        embedder, [r.prompt for r in rows], _cache_dir(cache_dir), progress=not no_progress
    )
    index = {r.id: i for i, r in enumerate(rows)}
    fit_vectors = vectors[[index[r.id] for r in train_rows]].reshape(-1, embedder.dim)
    dense = None
    if recent is not None:
        err.print(f"{len(recent)} labels from traffic, the newest {len(newest or [])} held out")
        dense = np.vstack([prompt_dense([r.prompt for r in train_rows]), recent.dense])
        train_rows = [*train_rows, *recent.rows]
        fit_vectors = np.vstack([fit_vectors, recent.vectors])
    try:
        head = fit(
            train_rows, fit_vectors, embedder.signature, dense=dense, progress=not no_progress
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out_path = out_path or (_deployment_head() if from_ledger else DEFAULT_HEAD)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    head.save(out_path)
    err.print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB)")
    if held:
        from gateway.training.router.evaluate import evaluate_rows

        results = evaluate_rows(head, held, vectors[[index[r.id] for r in held]])
        out.print(results_table(results, title="held-out validation rows"))
    if newest is not None and len(newest):
        out.print(_traffic_table(newest, {"new head": head, "shipped head": _shipped()}))


def _deployment_head() -> Path:
    from gateway.ml.classifier import DEPLOYMENT_HEAD

    return _settings().data_dir / DEPLOYMENT_HEAD


def _shipped() -> Head:
    from gateway.ml.head import Head

    return Head.load(DEFAULT_HEAD)


def _settings() -> Settings:
    from gateway.settings import Settings

    return Settings.from_env()


def _traffic(since: str, holdout: float) -> tuple[TrafficRows, TrafficRows]:
    """(older, newest) labels from the traffic since ``since``."""
    from gateway.ledger.window import parse_when
    from gateway.training.router import traffic

    if not 0 <= holdout < 1:
        raise _fail("--holdout is a share from 0 to 1 (not 1)", 2)
    try:
        start = parse_when(since, time.time())
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    labels = traffic.load(_settings(), start)
    if not len(labels):
        raise _fail(
            f"no labels from traffic since {since}: turn on the policy's shadow section "
            "(or collect feedback on requests whose features it keeps)"
        )
    return traffic.split_by_time(labels, holdout)


def _traffic_table(rows: TrafficRows, heads: dict[str, Head]) -> Table:
    """Each head beside the difficulty the traffic was routed by and a random router."""
    from gateway.training.router.traffic import compare

    table = Table(
        title=f"routing quality: {len(rows)} held-out labels from traffic (the newest)",
        title_justify="left",
    )
    for column in ("router", "n", "small", "large", "APGR", "CPT(50%)", "CPT(80%)", "large @95%"):
        table.add_column(column, justify="left" if column == "router" else "right")
    for name, r in compare(rows, heads).reports.items():
        table.add_row(
            name,
            str(r.n),
            f"{r.weak_quality:.3f}",
            f"{r.strong_quality:.3f}",
            f"{r.apgr:.3f}",
            _pct(r.cpt50),
            _pct(r.cpt80),
            _pct(r.share95),
        )
    return table


@router_app.command()
def score(
    in_path: Annotated[Path, typer.Option("--in", help="Rows {id, prompt} or {id, messages}.")],
    out_path: Annotated[Path, typer.Option("--out", help="Rows {id, difficulty, category}.")],
    head: HeadOption = None,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 64,
    no_progress: NoProgress = False,
) -> None:
    """Score prompts: difficulty in [0, 1] and category, one output row per input row."""
    from gateway.training.router.evaluate import load_classifier, read_prompts, score_prompts

    prompts = read_prompts(in_path)
    classifier, embedder = load_classifier(head, model)
    judgements = score_prompts(
        classifier, embedder, prompts, batch_size=batch_size, progress=not no_progress
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as f:
        for prompt, judgement in zip(prompts, judgements, strict=True):
            row = {
                "id": prompt.id,
                "difficulty": round(judgement.difficulty, 6),
                "category": judgement.category,
            }
            f.write(json.dumps(row) + "\n")
    err.print(f"wrote {len(prompts)} rows to {out_path}")


@router_app.command("eval")
def eval_(
    data: DataOption = None,
    from_ledger: FromLedger = False,
    since: SinceOption = "90d",
    holdout: HoldoutOption = HOLDOUT,
    head: HeadOption = None,
    model: ModelOption = None,
    include_train: Annotated[
        bool,
        typer.Option(help="Also evaluate on rows the head was trained on (optimistic figures)."),
    ] = False,
    cache_dir: CacheOption = None,
    no_progress: NoProgress = False,
) -> None:
    """APGR, CPT(50%), CPT(80%) and the strong share for 95% quality, beside a random router.

    Rows the head was trained on are left out unless --include-train is given. With
    --from-ledger: on the newest labels from traffic (held out by ``train --from-ledger``), the
    deployment's head (or --head) beside the shipped one, the difficulty the requests were
    routed by, and random.
    """
    from gateway.training.router.data import cached_embeddings, load_labelled
    from gateway.training.router.evaluate import evaluate_rows, load_classifier

    if (not data) == (not from_ledger):
        raise _fail("give one of --data or --from-ledger", 2)
    if from_ledger:
        _, newest = _traffic(since, holdout)
        if not len(newest):
            raise _fail("too few labels to hold any out: lower --holdout's rounding or wait")
        mine = head or _deployment_head()
        from gateway.ml.head import Head

        heads = {"shipped head": _shipped()}
        if mine.exists():
            heads = {f"head {mine}": Head.load(mine), **heads}
        out.print(_traffic_table(newest, heads))
        return
    rows = [row for path in data or [] for row in load_labelled(path)]
    classifier, embedder = load_classifier(head, model)
    seen = classifier.head.trained_on(rows)
    if seen.any() and not include_train:
        err.print(
            f"leaving out {int(seen.sum())} rows the head was trained on "
            "(--include-train keeps them)"
        )
        rows = [r for r, s in zip(rows, seen, strict=True) if not s]
    if not rows:
        raise _fail("no rows to evaluate")
    vectors = cached_embeddings(
        embedder, [r.prompt for r in rows], _cache_dir(cache_dir), progress=not no_progress
    )
    results = evaluate_rows(classifier.head, rows, vectors)
    out.print(results_table(results, title=", ".join(map(str, data or []))))


def results_table(results: dict[str, Any], title: str) -> Table:
    """Rows per benchmark: ours beside the random router."""
    table = Table(title=f"routing quality: {title}", title_justify="left")
    for column in ("benchmark", "router", "n", "APGR", "CPT(50%)", "CPT(80%)", "strong @95%"):
        table.add_column(column, justify="left" if column in ("benchmark", "router") else "right")
    for name, (ours, rand) in results.items():
        for label, r in (("classifier", ours), ("random", rand)):
            table.add_row(
                name if label == "classifier" else "",
                label,
                str(r.n),
                f"{r.apgr:.3f}",
                _pct(r.cpt50),
                _pct(r.cpt80),
                _pct(r.share95),
                end_section=label == "random",
            )
    return table


def _ledger_prompts(since: str) -> list[Prompt]:
    from gateway.ledger.window import parse_when
    from gateway.settings import Settings
    from gateway.training.router.from_ledger import ledger_prompts

    now = time.time()
    prompts = ledger_prompts(Settings.from_env(), parse_when(since, now), now)
    if not prompts:
        raise ValueError(f"the ledger has no routed requests with a difficulty since {since}")
    return prompts


@router_app.command()
def quality(
    since: Annotated[str, typer.Option(help="Labels from (7d, 24h, 2026-11-01...).")] = "7d",
    by: Annotated[
        str, typer.Option(help="Group by model (the small one), tenant, or difficulty band.")
    ] = "model",
) -> None:
    """What the router sent to the small model, as the shadow judge graded it beside the large
    model's answers to the same requests (and clients' feedback): the evidence before trusting
    the savings. The shadow spend itself is in `gateway report --by route` (route ``shadow``)."""
    from gateway.ledger.window import parse_when
    from gateway.training.router.traffic import load_labelled
    from gateway.training.router.traffic import quality as judged_quality

    if by not in ("model", "tenant", "difficulty"):
        raise _fail("--by is one of model, tenant, difficulty", 2)
    try:
        start = parse_when(since, time.time())
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    labels = load_labelled(_settings(), start)
    if not labels:
        raise _fail(f"no labels since {since}: turn on the policy's shadow section")
    table = Table(title=f"small-model answers, judged, since {since}", title_justify="left")
    columns = (by, "compared", "small", "large", "small/large", "as good", "feedback", "mean")
    for column in columns:
        table.add_column(column, justify="left" if column == by else "right")
    for q in judged_quality(labels, by):
        table.add_row(
            q.group,
            str(q.compared),
            f"{q.small:.3f}",
            f"{q.large:.3f}",
            _pct(q.small / q.large) if q.large else "n/a",
            _pct(q.as_good),
            str(q.feedback),
            "" if q.feedback_mean is None else f"{q.feedback_mean:.2f}",
            end_section=q.group == "all",
        )
    out.print(table)


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


@router_app.command()
def calibrate(
    prompts_path: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Rows {id, prompt} or {id, messages}, or scored rows {id, difficulty, category, "
            "input_tokens}; optional output_tokens per row.",
        ),
    ] = None,
    from_ledger: Annotated[
        bool,
        typer.Option(
            "--from-ledger",
            help="Instead of --prompts: the requests the gateway routed, from its ledger "
            "(GATEWAY_REDIS_URL or GATEWAY_DATA_DIR, as for serve).",
        ),
    ] = False,
    since: Annotated[
        str, typer.Option(help="With --from-ledger: from (7d, 24h, 2026-11-01...).")
    ] = "7d",
    target_strong_share: Annotated[
        float | None,
        typer.Option(help="At most this share of prompts to the strong model (0..1)."),
    ] = None,
    target_cost_per_mtok: Annotated[
        float | None, typer.Option(help="At most this projected USD per million tokens.")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Policy file [env: GATEWAY_POLICY, default: policies/default.yaml].",
            show_default=False,
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Update the threshold in the policy file in place.")
    ] = False,
    output_tokens: Annotated[
        int, typer.Option(help="Assumed output tokens per prompt (when a row gives none).")
    ] = 256,
    head: HeadOption = None,
    model: ModelOption = None,
    no_progress: NoProgress = False,
) -> None:
    """Set the difficulty threshold for a target share of strong calls or cost per Mtok."""
    from gateway.training.router.calibrate import (
        CalibrationError,
        candidate_path,
        read_policy,
        write_threshold,
    )
    from gateway.training.router.calibrate import calibrate as run_calibration
    from gateway.training.router.evaluate import calibration_prompts

    if (target_strong_share is None) == (target_cost_per_mtok is None):
        raise _fail("give one of --target-strong-share or --target-cost-per-mtok", 2)
    if (prompts_path is None) == (not from_ledger):
        raise _fail("give one of --prompts or --from-ledger", 2)
    if target_strong_share is not None and not 0 <= target_strong_share <= 1:
        raise _fail("--target-strong-share is a share between 0 and 1", 2)
    path = policy or Path(os.environ.get("GATEWAY_POLICY", "policies/default.yaml"))
    try:
        _, routes = read_policy(path)
        if prompts_path is not None:
            prompts, token_note = calibration_prompts(
                prompts_path, head, model, output_tokens, progress=not no_progress
            )
        else:
            prompts, token_note = _ledger_prompts(since), "from the ledger"
        result = run_calibration(
            routes,
            prompts,
            target_strong_share=target_strong_share,
            target_cost_per_mtok=target_cost_per_mtok,
        )
    except (CalibrationError, ValueError, KeyError) as exc:
        raise _fail(str(exc)) from None
    out.print(
        f"{len(prompts)} prompts; input tokens {token_note}; output tokens: logged where rows "
        f"give them, else {output_tokens} assumed per prompt"
    )
    out.print(
        f"strong model: {routes.strong} (rule {routes.rule_name!r}, difficulty {routes.bound}); "
        f"default model: {routes.weak or '(none)'}"
    )
    if routes.skipped_rules:
        out.print(
            f"rules taken as not matching (tenant, tags or model conditions): "
            f"{', '.join(routes.skipped_rules)}"
        )
    table = Table(title="projection", title_justify="left")
    table.add_column("")
    table.add_column("threshold", justify="right")
    table.add_column("strong share", justify="right")
    table.add_column("USD / Mtok", justify="right")
    table.add_column("shares")
    for label, p in (("current", result.current), ("calibrated", result.chosen)):
        table.add_row(
            label,
            f"{routes.bound} {p.threshold:g}",
            f"{p.strong_share:.1%}",
            f"{p.cost_per_mtok:.4f}",
            ", ".join(f"{m} {s:.1%}" for m, s in p.shares.items()),
        )
    out.print(table)
    base = result.chosen.baseline_cost_per_mtok
    if base:
        out.print(
            f"all to {routes.baseline or routes.strong}: {base:.4f} USD/Mtok; calibrated saves "
            f"{1 - result.chosen.cost_per_mtok / base:.1%}"
        )
    if not result.reachable:
        raise _fail("no threshold meets the target; the closest one is shown", 1)
    if write:
        from gateway.policy.load import PolicyError, load_policy

        try:
            write_threshold(path, result.chosen.threshold, load_policy)
        except PolicyError as exc:
            problems = str(exc).replace(str(candidate_path(path)), str(path))
            err.print(
                f"error: the calibrated policy would not load; {path} is unchanged:\n{problems}"
            )
            raise typer.Exit(1) from None
        out.print(f"wrote {routes.bound}: {result.chosen.threshold:g} to {path}")
