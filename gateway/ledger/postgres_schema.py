"""The PostgreSQL ledger's schema (its migrations), its monthly partitions, and the
transaction that writes a batch.

The tables are those of the SQLite ledger (`gateway.ledger.rows`), in the schema ``ledger``;
`upgrade` applies the SQL files of ``gateway/ledger/migrations`` with yoyo-migrations (which
records what it applied and takes a lock, so two replicas upgrading at once apply each file
once). ``records`` is partitioned by month of its UTC day: old months can be detached or dropped
whole, and a period's records lie together. The writer creates a month's partition before
writing its first record (`ensure_partitions`). The daily rollups are added by `store_batch`;
the tags' hourly ones (``rollup_tag_hour``, for the partial days of tagged reports) by a trigger
of migration 0002 on the same INSERT, so they count exactly the records it really stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

from gateway.errors import GatewayError
from gateway.ledger.record import LedgerRecord
from gateway.ledger.rows import COLUMNS, Rollups, row_of
from gateway.ledger.spend import SpendKey
from gateway.ledger.sums import NAMES

SCHEMA = "ledger"
MIGRATIONS = Path(__file__).with_name("migrations")
INDEX_MIGRATIONS = Path(__file__).parents[1] / "semantic" / "migrations"
"""The table of the shared semantic index (``cache.semantic.index: pgvector``)."""
_EPOCH = date(1970, 1, 1)


class SchemaMissing(GatewayError):
    """The database has no ledger tables yet (or an older version of them)."""

    status = 503
    type = "api_error"
    default_code = "ledger_schema_missing"


def upgrade(url: str) -> list[str]:
    """Apply the migrations this database lacks, in order, under yoyo's lock; returns the ids
    of those applied (none when it was up to date). The shared semantic index's migrations
    (`INDEX_MIGRATIONS`) come too where the server has pgvector; without it the ledger's are
    applied alone, and a later upgrade, once pgvector is installed, adds the index's."""
    with _backend(url) as backend, backend.lock():
        sources = [str(MIGRATIONS)]
        if _has_pgvector(backend):
            sources.append(str(INDEX_MIGRATIONS))
        todo = backend.to_apply(read_migrations(*sources))
        backend.apply_migrations(todo)
    return [migration.id for migration in todo]


def pending(url: str) -> list[str]:
    """The ids of the ledger's migrations not applied to this database yet (what it waits for
    before it writes)."""
    with _backend(url) as backend:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS)))]


def _has_pgvector(backend: Any) -> bool:
    cursor = backend.connection.cursor()
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    return cursor.fetchone() is not None


@contextlib.contextmanager
def _backend(url: str) -> Iterator[Any]:
    """yoyo's backend for ``url`` (it names the psycopg 3 driver in the scheme), closed after."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg{sep}{rest}"
    backend = get_backend(url)
    try:
        yield backend
    finally:
        backend.connection.close()


def connect(url: str, timeout_s: int) -> psycopg.Connection:
    """A ledger connection: unqualified names are the ledger's tables, and only explicit
    ``conn.transaction()`` blocks are transactions (so a read never leaves one open)."""
    return psycopg.connect(url, autocommit=True, **connect_options(timeout_s))


def connect_options(timeout_s: int) -> dict[str, Any]:
    """`connect`'s options besides autocommit, for a pool's connections too. No JIT: the
    ledger's queries are short, and compiling one took longer (~40 ms) than running it."""
    return {"options": f"-c search_path={SCHEMA} -c jit=off", "connect_timeout": timeout_s}


def check_schema(url: str) -> None:
    """Raise `SchemaMissing` unless every migration is applied."""
    missing = pending(url)
    if missing:
        raise SchemaMissing(
            f"the ledger's tables in PostgreSQL lack migrations {missing}: run `gateway db upgrade`"
        )


def month_of(day: int) -> tuple[str, int, int]:
    """The partition of a UTC day number: its name and its days ``[first, stop)``."""
    when = _EPOCH + timedelta(days=day)
    first = date(when.year, when.month, 1)
    stop = date(when.year + when.month // 12, when.month % 12 + 1, 1)
    return f"records_{when.year:04d}_{when.month:02d}", (first - _EPOCH).days, (stop - _EPOCH).days


def ensure_partitions(conn: psycopg.Connection, days: Iterable[int], known: set[str]) -> None:
    """Create the monthly partitions of ``days`` that are not in ``known`` (then add them).

    Each in its own transaction, before the batch's: another replica creating the same month
    at the same moment makes ours fail with ``DuplicateTable``, which means it exists."""
    for name, first, stop in sorted({month_of(day) for day in days}):
        if name in known:
            continue
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF records FOR VALUES FROM ({}) TO ({})"
        ).format(sql.Identifier(SCHEMA, name), sql.Literal(first), sql.Literal(stop))
        with contextlib.suppress(psycopg.errors.DuplicateTable), conn.transaction():
            conn.execute(statement)
        known.add(name)


_COPY = f"COPY incoming ({', '.join(COLUMNS)}) FROM STDIN"
_INSERT = (
    f"INSERT INTO records ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM incoming "
    "ON CONFLICT DO NOTHING RETURNING request_id"
)


def _upsert(table: str, key: tuple[str, ...]) -> str:
    quoted = [f'"{n}"' for n in NAMES]  # "both" is a keyword
    columns = (*key, *quoted)
    add = ", ".join(f"{n} = {table}.{n} + excluded.{n}" for n in quoted)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {add}"
    )


_UPSERT_MAIN = _upsert("rollup", ("day", "tenant", "model", "route", "cache"))
_UPSERT_TAG = _upsert("rollup_tag", ("day", "tag", "tenant", "model", "route", "cache"))


def store_batch(
    conn: psycopg.Connection, batch: list[LedgerRecord], partitions: set[str]
) -> dict[SpendKey, int]:
    """Insert the records not stored yet and add their sums to the rollups, in one transaction.

    The batch is COPY'd into a temporary table and inserted from there with ``ON CONFLICT DO
    NOTHING RETURNING``: the records that come back are the new ones, and only they are added
    to the rollups. Returns the cost newly counted per (tenant, day).
    """
    rows = [row_of(record) for record in batch]
    ensure_partitions(conn, (row[2] for row in rows), partitions)
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE records) ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cursor:
            with cursor.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_INSERT)
            new = {request_id for (request_id,) in cursor.fetchall()}
        fresh = []
        for record in batch:
            if record.request_id in new:
                new.discard(record.request_id)  # a record twice in one batch counts once
                fresh.append(record)
        sums = Rollups.of(fresh)
        with conn.cursor() as cursor:
            cursor.executemany(_UPSERT_MAIN, sums.main_rows())
            cursor.executemany(_UPSERT_TAG, sums.tag_rows())
    return sums.counted
