"""Databases for the pgvector index's tests: fresh ones with the ledger's migrations applied
(the table ``semantic.entries`` among them), and a count of their rows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from gateway.ledger.postgres_schema import upgrade
from tests.postgres import fresh_database


@contextlib.contextmanager
def upgraded_database() -> Iterator[str]:
    """The URL of a new database after `gateway db upgrade`, dropped afterwards."""
    with fresh_database() as url:
        upgrade(url)
        yield url


def rows(url: str, tenant: str | None = None) -> int:
    """The entries in the shared table (of ``tenant``, or all)."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM semantic.entries WHERE %s::text IS NULL OR tenant = %s",
            (tenant, tenant),
        ).fetchone()
    assert found is not None
    return int(found[0])
