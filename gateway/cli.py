"""The ``gateway`` command: serve, and check or describe policy files."""

from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.batch.cli import batch_app
from gateway.ledger.cli import register as register_ledger_commands
from gateway.ledger.db_cli import db_app
from gateway.policy.load import PolicyError, load_policy
from gateway.policy.schema import Policy
from gateway.runtime.access import open_access_refused
from gateway.settings import Settings
from gateway.training.cache.cli import app as cache_app
from gateway.training.router.cli import router_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="An OpenAI-compatible LLM gateway that caches, routes and accounts.",
)
policy_app = typer.Typer(no_args_is_help=True, help="Check and describe policy files.")
app.add_typer(policy_app, name="policy")
app.add_typer(router_app, name="router")
app.add_typer(cache_app, name="cache")
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")
register_ledger_commands(app)  # gateway report, gateway replay
err = Console(stderr=True, highlight=False, soft_wrap=True)

PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="Policy file [env: GATEWAY_POLICY, default: policies/default.yaml].",
        show_default=False,
    ),
]


class LogFormat(enum.StrEnum):
    json = "json"
    text = "text"


@app.command()
def serve(
    policy: PolicyOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    allow_open: Annotated[
        bool,
        typer.Option(
            "--allow-open",
            help="Serve a policy without tenants (no API keys) on a non-loopback host.",
        ),
    ] = False,
    shutdown_grace: Annotated[
        int | None,
        typer.Option(
            help="Seconds requests in flight may run on after SIGTERM before they are "
            "cancelled [env: GATEWAY_SHUTDOWN_GRACE_S, default: 30].",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        LogFormat, typer.Option(help="json: one JSON object a line; text: for people.")
    ] = LogFormat.json,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.telemetry import configure_logging

    configure_logging(log_level, log_format.value)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
    settings = Settings.from_env(
        policy_path=policy, host=host, allow_open=allow_open, shutdown_grace_s=shutdown_grace
    )
    loaded = _load_or_exit(settings.policy_path)
    refused = open_access_refused(loaded.policy.tenants, settings)
    if refused is not None:
        err.print(f"error: {settings.policy_path}: {refused}")
        raise typer.Exit(2)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level,
        log_config=None,  # uvicorn's lines go through the gateway's formatter too
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


@policy_app.command("check")
def check(paths: Annotated[list[Path], typer.Argument(help="Policy files to check.")]) -> None:
    """Validate policy files: exit 0 when all are valid, else print every problem and exit 1."""
    failed = False
    for path in paths:
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            failed = True
            for problem in exc.problems:
                typer.echo(str(problem))
            continue
        for warning in loaded.warnings:
            err.print(f"{warning} (warning)")
        err.print(f"{path}: ok")
    raise typer.Exit(1 if failed else 0)


@policy_app.command("schema")
def schema() -> None:
    """Print the policy's JSON Schema, for editors to validate and complete the YAML."""
    document = Policy.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "LLM gateway policy"
    typer.echo(json.dumps(document, indent=2))


def _load_or_exit(path: Path):  # type: ignore[no-untyped-def]
    try:
        return load_policy(path)
    except PolicyError as exc:
        err.print(f"error: the policy {path} is invalid:")
        for problem in exc.problems:
            err.print(f"  {problem}")
        raise typer.Exit(1) from exc


def main() -> None:
    app()
