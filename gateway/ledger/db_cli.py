"""``gateway db``: the PostgreSQL ledger's schema, applied or checked from the command line
(run ``upgrade`` once per release, before or while the new gateways start: it takes a lock,
and the gateways spool their records until the tables are there)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from gateway.ledger.postgres_schema import pending, upgrade
from gateway.settings import Settings

db_app = typer.Typer(
    help="The PostgreSQL ledger's tables, and the shared semantic index's (GATEWAY_LEDGER_URL).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

Url = Annotated[
    str | None,
    typer.Option(help="postgresql://...; default: GATEWAY_LEDGER_URL.", show_default=False),
]


def _url(url: str | None) -> str:
    found = url or Settings.from_env().ledger_url
    if not found:
        err.print("No database: give --url or set GATEWAY_LEDGER_URL (postgresql://...).")
        raise typer.Exit(2)
    return found


@db_app.command("upgrade")
def upgrade_command(url: Url = None) -> None:
    """Create or update the ledger's tables (migrations not applied yet, in order), and the
    shared semantic index's table (cache.semantic.index: pgvector) where the server has
    pgvector."""
    applied = upgrade(_url(url))
    out.print(f"applied: {', '.join(applied)}" if applied else "up to date")


@db_app.command("status")
def status_command(url: Url = None) -> None:
    """List the ledger's migrations not applied yet; exit 1 when there are some."""
    missing = pending(_url(url))
    if missing:
        out.print(f"not applied: {', '.join(missing)} (run `gateway db upgrade`)")
        raise typer.Exit(1)
    out.print("up to date")
