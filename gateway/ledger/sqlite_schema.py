"""The SQLite ledger's tables, the transaction that writes a batch into them, and the mapping
between a `LedgerRecord` and its row.

Tables:

- ``records``: one row per request, clustered by time (``WITHOUT ROWID``, primary key
  ``(time, request_id)``, so a period's records lie together on disk), with a unique index on
  ``request_id`` (a record written twice is stored once);
- ``rollup`` and ``rollup_tag``: the `Sums` of each main group and tag group (see
  `gateway.ledger.sums`), updated in the same transaction as the records.

Money is stored as integer nano-dollars (``cost_nusd``, ``baseline_nusd``). Record fields
without a column of their own are kept as JSON in ``extra``, so a new field of `LedgerRecord`
survives the round trip before it earns a column.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from gateway.ledger.base import SpendKey
from gateway.ledger.record import LedgerRecord
from gateway.ledger.sums import NAMES, Sums, day_of, from_nanos, main_key, tag_keys, to_nanos

_COLUMNS = (
    *("request_id", "time", "day", "tenant", "tags", "route", "model", "cache"),
    *("input_tokens", "cached_input_tokens", "output_tokens", "cost_nusd", "baseline_nusd"),
    *("latency_ms", "ttft_ms", "difficulty", "status", "stream", "estimated", "extra"),
)
"""The columns of ``records``, in order."""
_KNOWN = frozenset(
    (
        *("time", "request_id", "tenant", "tags", "route", "model", "cache"),
        *("input_tokens", "cached_input_tokens", "output_tokens", "cost_usd"),
        *("baseline_cost_usd", "latency_ms", "ttft_ms", "difficulty", "status"),
        *("stream", "estimated"),
    )
)
"""The record fields that have a column; the others go to ``extra``."""
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
_INSERT = f"INSERT OR IGNORE INTO records VALUES ({', '.join('?' * len(_COLUMNS))})"
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
    main: dict[tuple[Any, ...], Sums] = {}
    tagged: dict[tuple[Any, ...], Sums] = {}
    counted: dict[SpendKey, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        fresh = _not_stored(conn, batch)
        conn.executemany(_INSERT, [_row(record) for record in fresh])
        for record in fresh:
            sums = Sums.of(record)
            key = main_key(record)
            main.setdefault(key, Sums()).add(sums)
            for tag_key in tag_keys(record):
                tagged.setdefault(tag_key, Sums()).add(sums)
            if sums.cost:
                spend_key = (record.tenant, key[0])
                counted[spend_key] = counted.get(spend_key, 0) + sums.cost
        conn.executemany(_UPSERT_MAIN, [(*k, *s.values()) for k, s in main.items()])
        conn.executemany(_UPSERT_TAG, [(*k, *s.values()) for k, s in tagged.items()])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    return counted


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


def _row(record: LedgerRecord) -> tuple[Any, ...]:
    extra = {k: v for k, v in msgspec.structs.asdict(record).items() if k not in _KNOWN}
    return (
        record.request_id,
        record.time,
        day_of(record.time),
        record.tenant,
        msgspec.json.encode(record.tags).decode(),
        record.route,
        record.model,
        record.cache,
        record.input_tokens,
        record.cached_input_tokens,
        record.output_tokens,
        None if record.cost_usd is None else to_nanos(record.cost_usd),
        None if record.baseline_cost_usd is None else to_nanos(record.baseline_cost_usd),
        record.latency_ms,
        record.ttft_ms,
        record.difficulty,
        record.status,
        int(record.stream),
        int(record.estimated),
        msgspec.json.encode(extra).decode() if extra else None,
    )


def record_of(row: tuple[Any, ...]) -> LedgerRecord:
    """The record of a ``SELECT * FROM records`` row."""
    column = dict(zip(_COLUMNS, row, strict=True))
    cost, base, extra = column["cost_nusd"], column["baseline_nusd"], column["extra"]
    fields: dict[str, Any] = {name: column[name] for name in _KNOWN if name in column}
    fields.update(
        tags=msgspec.json.decode(column["tags"]),
        cost_usd=None if cost is None else from_nanos(cost),
        baseline_cost_usd=None if base is None else from_nanos(base),
        stream=bool(column["stream"]),
        estimated=bool(column["estimated"]),
    )
    if extra:
        fields.update(msgspec.json.decode(extra))
    return msgspec.convert(fields, LedgerRecord)
