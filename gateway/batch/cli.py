"""``gateway batch submit|status|results``: the Batch API for operators without an SDK.

The commands talk to a running gateway over HTTP with a tenant's key (the official openai
client underneath, so they speak exactly what the SDKs speak) and follow a batch with a rich
progress bar of its finished lines until it reaches a final status.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.batch.wire import ENDPOINTS

if TYPE_CHECKING:
    import openai
    from openai.types import Batch

batch_app = typer.Typer(no_args_is_help=True, help="Submit batches and fetch their results.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
FINAL = ("completed", "failed", "expired", "cancelled")
POLL_S = 1.0

UrlOption = Annotated[
    str, typer.Option(envvar="GATEWAY_URL", help="The running gateway, e.g. http://127.0.0.1:8080.")
]
KeyOption = Annotated[str, typer.Option(envvar="GATEWAY_API_KEY", help="A tenant's API key.")]
WaitOption = Annotated[bool, typer.Option(help="Follow the batch until it finishes.")]


@batch_app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="A JSONL file of OpenAI batch request lines.")],
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: KeyOption = "",
    endpoint: Annotated[
        str | None, typer.Option(help="The lines' endpoint; default: the first line's url.")
    ] = None,
    wait: WaitOption = True,
) -> None:
    """Upload FILE and start a batch of its lines; prints the batch id."""
    chosen = endpoint or _first_url(file)
    if chosen not in ENDPOINTS:
        raise typer.BadParameter(f"the endpoint must be one of {', '.join(ENDPOINTS)}")
    with _client(url, api_key) as client, file.open("rb") as data:
        uploaded = client.files.create(file=(file.name, data), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=chosen,  # type: ignore[arg-type]
            completion_window="24h",
        )
        err.print(f"batch {batch.id}: {batch.status}")
        if wait:
            batch = _follow(client, batch.id)
    sys.stdout.write(batch.id + "\n")
    _exit_on_failure(batch)


@batch_app.command("status")
def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: KeyOption = "",
    wait: WaitOption = False,
) -> None:
    """The batch as the API has it (JSON); with --wait, after a progress bar to its end."""
    with _client(url, api_key) as client:
        batch = _follow(client, batch_id) if wait else client.batches.retrieve(batch_id)
    sys.stdout.write(json.dumps(batch.model_dump(), indent=2) + "\n")


@batch_app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: KeyOption = "",
    output: Annotated[
        Path | None, typer.Option(help="Write the output lines here; default: stdout.")
    ] = None,
    errors: Annotated[Path | None, typer.Option(help="Write the error lines here.")] = None,
) -> None:
    """Wait for the batch (progress bar), then write its output lines (and its error lines)."""
    with _client(url, api_key) as client:
        batch = _follow(client, batch_id)
        if batch.output_file_id is not None:
            data = client.files.content(batch.output_file_id).content
            if output is None:
                sys.stdout.write(data.decode())
            else:
                output.write_bytes(data)
        if batch.error_file_id is not None:
            data = client.files.content(batch.error_file_id).content
            if errors is not None:
                errors.write_bytes(data)
            else:
                err.print(
                    f"{batch.request_counts.failed if batch.request_counts else '?'} lines "
                    "failed; write them with --errors FILE"
                )
    _exit_on_failure(batch)


def _first_url(file: Path) -> str:
    with file.open("rb") as lines:
        for raw in lines:
            if raw.strip():
                try:
                    return str(json.loads(raw).get("url", ""))
                except (ValueError, AttributeError):
                    raise typer.BadParameter(
                        f"{file}: the first line is not a JSON object"
                    ) from None
    raise typer.BadParameter(f"{file}: no lines")


@contextlib.contextmanager
def _client(url: str, api_key: str) -> Iterator[openai.OpenAI]:
    """A client of the gateway; an error it answers is printed, not a traceback (exit 1)."""
    import openai  # ~0.4 s kept off the other commands' start-up

    base_url = f"{url.rstrip('/')}/v1"
    try:
        with openai.OpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=60
        ) as client:
            yield client
    except openai.APIStatusError as exc:
        err.print(f"error: the gateway answered {exc.status_code}: {exc.message}")
        raise typer.Exit(1) from None
    except openai.APIConnectionError as exc:
        err.print(f"error: cannot reach the gateway at {url}: {exc}")
        raise typer.Exit(1) from None


def _follow(client: openai.OpenAI, batch_id: str) -> Batch:
    """Poll the batch with a progress bar of its finished lines until a final status."""
    progress = Progress(
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
    )
    with progress:
        task = progress.add_task("batch", total=None, status="validating", failed=0)
        while True:
            batch = client.batches.retrieve(batch_id)
            counts = batch.request_counts
            if counts is not None:
                done = counts.completed + counts.failed
                progress.update(
                    task,
                    total=counts.total or None,
                    completed=done,
                    status=batch.status,
                    failed=counts.failed,
                )
            if batch.status in FINAL:
                return batch
            time.sleep(POLL_S)


def _exit_on_failure(batch: Batch) -> None:
    if batch.status == "failed":
        for error in (batch.errors.data or []) if batch.errors else []:
            err.print(f"line {error.line}: {error.code}: {error.message}")
        raise typer.Exit(1)
