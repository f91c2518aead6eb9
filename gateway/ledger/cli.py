"""``gateway report`` and ``gateway replay``: cost reports from the ledger, and a replay of a
prompt mix through a running gateway that ends with the report of that run.

``report`` reads the same settings as ``serve`` (``GATEWAY_REDIS_URL``, ``GATEWAY_DATA_DIR``),
so it sees what the running gateway wrote. Mount both on the main app with `register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.ledger.report import METRICS, Report, Row, gpu_hour_table, render_table
from gateway.ledger.store import open_ledger
from gateway.ledger.window import parse_by, parse_when
from gateway.policy.load import PolicyError, load_policy
from gateway.policy.models import Price
from gateway.settings import Settings

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """Piped to a file or a pager, tables keep every column in full instead of 80 wide."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 250
    return console


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


SinceOption = Annotated[
    str, typer.Option(help="Start: a duration before now (24h, 7d, 2w), an ISO date, or unix s.")
]
UntilOption = Annotated[str, typer.Option(help="End (exclusive), in the same forms, or 'now'.")]
ByOption = Annotated[
    str,
    typer.Option(help="Group by a comma list of: model, route, tenant, tag, batch, day, cache."),
]


def report(
    since: SinceOption = "7d",
    until: UntilOption = "now",
    by: ByOption = "model",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only the requests with this tag (k=v).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Requests, tokens, cost, baseline cost and savings from the ledger."""
    now = time.time()
    try:
        start, end = parse_when(since, now), parse_when(until, now)
        groups = parse_by(by)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if start >= end:
        raise typer.BadParameter("--since must be before --until")
    if tag is not None and "=" not in tag:
        raise typer.BadParameter("--tag must be key=value")
    settings = Settings.from_env()
    result = asyncio.run(_report(settings, start, end, groups, tenant, tag))
    _print(result, format)
    prices = _gpu_hour_prices(settings) if format is Format.table else {}
    if prices:
        by_model = result
        if groups != ("model",):
            by_model = asyncio.run(_report(settings, start, end, ("model",), tenant, tag))
        _stdout().print(gpu_hour_table(prices, by_model))


def _gpu_hour_prices(settings: Settings) -> dict[str, Price]:
    """The policy's models priced per GPU hour; none when the policy cannot be read here (the
    cost report stands without them)."""
    try:
        policy = load_policy(settings.policy_path).policy
    except PolicyError:
        return {}
    return {
        name: model.price
        for name, model in policy.models.items()
        if model.price is not None and model.price.gpu_hour_usd is not None
    }


async def _report(
    settings: Settings,
    since: float,
    until: float,
    by: tuple[str, ...],
    tenant: str | None,
    tag: str | None,
) -> Report:
    ledger = open_ledger(settings.redis_url, settings.data_dir, ledger_url=settings.ledger_url)
    try:
        spooled = ledger.spool.count()
        if spooled:
            err.print(
                f"note: {spooled} records wait in the spool under {settings.data_dir} "
                "(the store was unreachable); they are not in this report until the gateway "
                "replays them."
            )
        return await ledger.report(since, until, by, tenant=tenant, tag=tag)
    finally:
        await ledger.aclose()


def _print(result: Report, form: Format) -> None:
    if form is Format.json:
        sys.stdout.write(result.to_json().decode() + "\n")
    elif form is Format.csv:
        sys.stdout.write(result.to_csv())
    else:
        _stdout().print(render_table(result))


# -- replay -----------------------------------------------------------------------------------


@dataclass
class _Run:
    run_id: str
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    cost: Decimal = Decimal(0)


def replay(
    prompts: Annotated[
        Path, typer.Option(help='JSON lines: {"prompt": ...} or {"messages": [...]}.')
    ],
    url: Annotated[str, typer.Option(help="The running gateway, e.g. http://127.0.0.1:8080.")],
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 8,
    api_key: Annotated[
        str | None, typer.Option(envvar="GATEWAY_API_KEY", help="A tenant's API key.")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(envvar="GATEWAY_ADMIN_KEY", help="Admin key, to fetch the run's report."),
    ] = None,
    model: Annotated[str, typer.Option(help="The model to ask for.")] = "auto",
    by: ByOption = "model,route,cache",
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Send a prompt mix through a running gateway, then print the cost report of that run."""
    try:
        requests = _read_prompts(prompts)
        groups = parse_by(by)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    base = url.rstrip("/").removesuffix("/v1")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    started = time.time()
    run = asyncio.run(_send_all(base, requests, concurrency, api_key, model, run_id))
    errors = ", ".join(f"{k}: {v}" for k, v in run.errors.most_common(3))
    err.print(f"run {run_id}: {run.sent} requests, {run.failed} failed {errors}".rstrip())
    if not admin_key:
        err.print("no --admin-key (or GATEWAY_ADMIN_KEY): summary from response headers only")
        _stdout().print(_header_summary(run))
        return
    result = asyncio.run(
        _fetch_report(base, admin_key, run_id, started - 60, groups, run.sent - run.failed)
    )
    _print(result, format)


def _read_prompts(path: Path) -> list[dict[str, Any]]:
    requests = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: each line must be a JSON object")
            if isinstance(row.get("messages"), list):
                messages = row.pop("messages")
            elif isinstance(row.get("prompt"), str):
                messages = [{"role": "user", "content": row.pop("prompt")}]
            else:
                raise ValueError(f"{path}:{number}: needs 'prompt' (a string) or 'messages'")
            row.pop("model", None)
            requests.append({"messages": messages, "extra": row})
    if not requests:
        raise ValueError(f"{path}: no prompts")
    return requests


async def _send_all(
    base: str,
    requests: list[dict[str, Any]],
    concurrency: int,
    api_key: str | None,
    model: str,
    run_id: str,
) -> _Run:
    import openai  # only `replay` needs it; ~0.4 s kept off every other command's start-up

    run = _Run(run_id)
    limit = asyncio.Semaphore(concurrency)
    client = openai.AsyncOpenAI(
        base_url=f"{base}/v1", api_key=api_key or "none", max_retries=0, timeout=300
    )
    progress = Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
    )

    async def one(request: dict[str, Any], task: Any) -> None:
        async with limit:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=request["messages"],
                    extra_headers={"x-gateway-tags": f"replay={run_id}"},
                    extra_body=request["extra"] or None,
                )
                headers = raw.headers
                run.cache[headers.get("x-gateway-cache", "?")] += 1
                run.models[headers.get("x-gateway-model", "?")] += 1
                with contextlib.suppress(InvalidOperation):
                    run.cost += Decimal(headers.get("x-gateway-cost-usd", "0"))
            except openai.APIError as exc:
                run.failed += 1
                run.errors[type(exc).__name__] += 1
            finally:
                run.sent += 1
                progress.update(task, advance=1, failed=run.failed)

    try:
        with progress:
            task = progress.add_task("replay", total=len(requests), failed=0)
            await asyncio.gather(*(one(request, task) for request in requests))
    finally:
        await client.close()
    return run


async def _fetch_report(
    base: str, admin_key: str, run_id: str, since: float, by: tuple[str, ...], expect: int
) -> Report:
    """The run's report from the gateway; polled briefly until every answered request is in."""
    import httpx  # only `replay` needs it; kept off the start-up of `report`

    params = {"tag": f"replay={run_id}", "since": str(since), "by": ",".join(by)}
    headers = {"authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + 10
        while True:
            response = await client.get("/admin/reports/cost", params=params, headers=headers)
            if response.status_code != 200:
                status, text = response.status_code, response.text
                err.print(f"error: GET /admin/reports/cost -> {status}: {text}")
                raise typer.Exit(1)
            body = response.json()
            if body["totals"]["requests"] >= expect or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    return report_from_dict(body, by, since=since, until=time.time(), tag=params["tag"])


def report_from_dict(
    body: dict[str, Any],
    by: tuple[str, ...],
    *,
    since: float,
    until: float,
    tenant: str | None = None,
    tag: str | None = None,
) -> Report:
    """A report back from its JSON (as `/admin/reports/cost` sends it)."""
    return Report(
        since=since,
        until=until,
        by=by,
        tenant=tenant,
        tag=tag,
        totals=_row(body["totals"], ()),
        rows=[_row(row, by) for row in body["rows"]],
    )


def _row(values: dict[str, Any], by: tuple[str, ...]) -> Row:
    fields: dict[str, Any] = {}
    for name in METRICS:
        value = values.get(name)
        if name.endswith("_usd") or name == "effective_usd_per_mtok":
            value = None if value is None else Decimal(str(value))
        fields[name] = value
    return Row(group={name: values.get(name) for name in by}, **fields)


def _header_summary(run: _Run) -> Table:
    table = Table(title=f"Replay {run.run_id} (from response headers)")
    table.add_column("what")
    table.add_column("requests", justify="right")
    for name, count in run.cache.most_common():
        table.add_row(f"cache {name}", str(count))
    for name, count in run.models.most_common():
        table.add_row(f"model {name}", str(count))
    table.add_row("cost (sum of x-gateway-cost-usd)", f"${run.cost}")
    return table


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``replay`` to the main ``gateway`` command."""
    app.command("report")(report)
    app.command("replay")(replay)
