"""The SQLite ledger's tables and the transaction that writes a batch into them.

Tables:

- ``records``: one row per request, clustered by time (``WITHOUT ROWID``, primary key
  ``(time, request_id)``, so a period's records lie together on disk), with a unique index on
  ``request_id`` (a record written twice is stored once);
- ``rollup`` and ``rollup_tag``: the `Sums` of each main group and tag group (see
  `gateway.ledger.sums`), updated in the same transaction as the records.

A record's row (money as integer nano-dollars, fields without a column in ``extra``) is
`gateway.ledger.rows`', shared with the PostgreSQL store.
"""

from __future__ import annotations

import sqlite3

from gateway.ledger.base import SpendKey
from gateway.ledger.record import LedgerRecord
from gateway.ledger.rows import COLUMNS, Rollups, row_of
from gateway.ledger.sums import NAMES

_SUM_COLUMNS = ", ".join(f"{name} INTEGER NOT NULL" for name in NAMES)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT NOT NULL,
    time REAL NOT NULL,
    day INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    tags TEXT NOT NULL,
    route TEXT,
    model TEXT,
    cache TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_nusd INTEGER,
    baseline_nusd INTEGER,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    difficulty REAL,
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    extra TEXT,
    PRIMARY KEY (time, request_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS records_id ON records (request_id);
CREATE TABLE IF NOT EXISTS rollup (
    day INTEGER NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL,
    cache TEXT NOT NULL, {_SUM_COLUMNS},
    PRIMARY KEY (day, tenant, model, route, cache)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_tenant ON rollup (tenant, day);
CREATE TABLE IF NOT EXISTS rollup_tag (
    day INTEGER NOT NULL, tag TEXT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL,
    route TEXT NOT NULL, cache TEXT NOT NULL, {_SUM_COLUMNS},
    PRIMARY KEY (day, tag, tenant, model, route, cache)
) WITHOUT ROWID;
"""
_INSERT = f"INSERT OR IGNORE INTO records VALUES ({', '.join('?' * len(COLUMNS))})"
_ADD = ", ".join(f"{n} = {n} + excluded.{n}" for n in NAMES)
_UPSERT_MAIN = (
    f"INSERT INTO rollup VALUES ({', '.join('?' * (5 + len(NAMES)))}) "
    f"ON CONFLICT (day, tenant, model, route, cache) DO UPDATE SET {_ADD}"
)
_UPSERT_TAG = (
    f"INSERT INTO rollup_tag VALUES ({', '.join('?' * (6 + len(NAMES)))}) "
    f"ON CONFLICT (day, tag, tenant, model, route, cache) DO UPDATE SET {_ADD}"
)


def store_batch(conn: sqlite3.Connection, batch: list[LedgerRecord]) -> dict[SpendKey, int]:
    """Insert the records not stored yet and add their sums to the rollups, in one transaction.

    Returns the cost newly counted per (tenant, day): a replayed record is counted once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        fresh = _not_stored(conn, batch)
        conn.executemany(_INSERT, [row_of(record) for record in fresh])
        sums = Rollups.of(fresh)
        conn.executemany(_UPSERT_MAIN, sums.main_rows())
        conn.executemany(_UPSERT_TAG, sums.tag_rows())
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    return sums.counted


def _not_stored(conn: sqlite3.Connection, batch: list[LedgerRecord]) -> list[LedgerRecord]:
    """The records of a batch whose request_id is not in the table yet, each once."""
    ids = list({record.request_id for record in batch})
    stored: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = conn.execute(
            f"SELECT request_id FROM records WHERE request_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        stored.update(rid for (rid,) in rows)
    fresh = []
    for record in batch:
        if record.request_id not in stored:
            stored.add(record.request_id)
            fresh.append(record)
    return fresh
