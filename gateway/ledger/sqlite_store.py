"""The embedded ledger: one SQLite file (WAL), for a gateway that runs with no other service.

Tables:

- ``records``: one row per request, clustered by time (``WITHOUT ROWID``, primary key
  ``(time, request_id)``, so a period's records lie together on disk), with a unique index on
  ``request_id`` (a record written twice is stored once);
- ``rollup`` and ``rollup_tag``: the `Sums` of each main group and tag group (see
  `gateway.ledger.sums`), updated in the same transaction as the records.

A report over whole UTC days reads only the rollups (a few rows per day, whatever the traffic);
the partial days at either end of its period are summed from ``records`` by time, so a report
is exact to the second and reads at most two days of records. SQLite does the grouping (by the
report's columns), so Python folds only the rows of the report.

Writes run in one dedicated thread that owns the write connection, and commit with
``synchronous=FULL`` (a batch is on disk when it counts as stored); reports open their own
read-only connection in another thread (WAL lets them read while the writer writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group
from gateway.ledger.spool import Spool
from gateway.ledger.store import SCAN_PAGE, Ledger, SpendKey
from gateway.ledger.sums import (
    DAY_S,
    NAMES,
    Sums,
    day_of,
    from_nanos,
    main_key,
    tag_keys,
    to_nanos,
)

T = TypeVar("T")

_KNOWN = frozenset(
    (
        *("time", "request_id", "tenant", "tags", "route", "model", "cache"),
        *("input_tokens", "cached_input_tokens", "output_tokens", "cost_usd"),
        *("baseline_cost_usd", "latency_ms", "ttft_ms", "difficulty", "status"),
        *("stream", "estimated"),
    )
)
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
_INSERT = f"INSERT OR IGNORE INTO records VALUES ({', '.join('?' * 20)})"
_ADD = ", ".join(f"{n} = {n} + excluded.{n}" for n in NAMES)
_UPSERT_MAIN = (
    f"INSERT INTO rollup VALUES ({', '.join('?' * (5 + len(NAMES)))}) "
    f"ON CONFLICT (day, tenant, model, route, cache) DO UPDATE SET {_ADD}"
)
_UPSERT_TAG = (
    f"INSERT INTO rollup_tag VALUES ({', '.join('?' * (6 + len(NAMES)))}) "
    f"ON CONFLICT (day, tag, tenant, model, route, cache) DO UPDATE SET {_ADD}"
)
DIMS = ("day", "tag", "tenant", "model", "route", "cache")
"""The columns of a `Group`, in order."""
# The same sums as `Sums.of`, over records (for the partial days at the ends of a period).
_RECORD_SUMS = """
    COUNT(*), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens),
    COALESCE(SUM(CASE WHEN cost_nusd IS NOT NULL THEN input_tokens + output_tokens END), 0),
    COALESCE(SUM(cost_nusd), 0), SUM(cost_nusd IS NULL),
    COALESCE(SUM(baseline_nusd), 0), SUM(baseline_nusd IS NULL),
    SUM(cost_nusd IS NOT NULL AND baseline_nusd IS NOT NULL),
    COALESCE(SUM(baseline_nusd - cost_nusd), 0)
"""


class SQLiteLedger(Ledger):
    kind = "sqlite"

    def __init__(self, path: Path, spool: Spool, **options: Any) -> None:
        super().__init__(spool, **options)
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._spend_cache: dict[SpendKey, int] = {}
        """Stored spend per (tenant, day), loaded once per key, then kept up to date."""

    def health(self) -> dict[str, Any]:
        return {"ledger": "sqlite", "queued": len(self._queue), "spooled": self.spool.count()}

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    async def _open(self) -> None:
        await self._in_thread(self._connect)
        # Records spooled when this store failed at a shutdown: store them now, once each.
        for path in await asyncio.to_thread(self.spool.claim):
            records = await asyncio.to_thread(self.spool.read, path)
            for start in range(0, len(records), self.max_batch):
                await self._in_thread(self._write_sync, records[start : start + self.max_batch])
            await asyncio.to_thread(self.spool.remove, path, len(records))

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the indexes of millions of rows
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    async def _close(self) -> None:
        if self._conn is not None:
            await self._in_thread(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)

    async def _write(self, batch: list[LedgerRecord]) -> None:
        await self._in_thread(self._write_sync, batch)

    def _write_sync(self, batch: list[LedgerRecord]) -> None:
        conn = self._connect()
        main: dict[tuple[Any, ...], Sums] = {}
        tagged: dict[tuple[Any, ...], Sums] = {}
        counted: dict[SpendKey, int] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = _not_stored(conn, batch)  # a replayed record is counted once
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
            conn.execute("ROLLBACK")
            raise
        self._stored(batch, counted)

    def _on_stored(self, counted: Mapping[SpendKey, int]) -> None:
        for key, nanos in counted.items():
            if key in self._spend_cache:
                self._spend_cache[key] += nanos

    async def _spend_nanos(self, tenant: str, days: range) -> int:
        with self._lock:
            if all((tenant, day) in self._spend_cache for day in days):
                return self._cached_spend(tenant, days)
        if self._conn is None:  # not started (a CLI): read the file as it is
            stored = await asyncio.to_thread(self._read_spend, tenant, days)
            with self._lock:
                return sum(stored.values()) + self._unstored_nanos(tenant, days)
        # On the writer thread, so no batch commits between the read and the caching.
        await self._in_thread(self._load_spend, tenant, days)
        with self._lock:
            return self._cached_spend(tenant, days)

    def _cached_spend(self, tenant: str, days: range) -> int:
        return sum(self._spend_cache[(tenant, d)] for d in days) + self._unstored_nanos(
            tenant, days
        )

    def _load_spend(self, tenant: str, days: range) -> None:
        stored = self._spend_rows(self._connect(), tenant, days)
        with self._lock:
            for day in days:
                self._spend_cache.setdefault((tenant, day), stored.get(day, 0))

    def _read_spend(self, tenant: str, days: range) -> dict[int, int]:
        conn = self._reader()
        if conn is None:
            return {}
        with contextlib.closing(conn):
            return self._spend_rows(conn, tenant, days)

    @staticmethod
    def _spend_rows(conn: sqlite3.Connection, tenant: str, days: range) -> dict[int, int]:
        rows = conn.execute(
            "SELECT day, SUM(cost) FROM rollup WHERE tenant = ? AND day >= ? AND day < ? "
            "GROUP BY day",
            (tenant, days.start, days.stop),
        )
        return {day: total for day, total in rows}

    def _reader(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def _groups(
        self,
        since: float,
        until: float,
        *,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...] = DIMS,
    ) -> list[Group]:
        return await asyncio.to_thread(self._groups_sync, since, until, tagged, tenant, tag, by)

    def _groups_sync(
        self,
        since: float,
        until: float,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...] = DIMS,
    ) -> list[Group]:
        conn = self._reader()
        if conn is None:
            return []
        query = _Query(tagged, tenant, tag, by)
        with contextlib.closing(conn):
            first = -(-since // DAY_S) * DAY_S  # the start of the first whole day
            last = until // DAY_S * DAY_S  # the end of the last whole day
            if first >= last:
                return query.scan(conn, since, until)
            return [
                *query.scan(conn, since, first),
                *query.rollups(conn, day_of(first), day_of(last)),
                *query.scan(conn, last, until),
            ]

    async def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        after = (since, "")  # keyset paging on the primary key (time, request_id)
        while page := await asyncio.to_thread(self._page, after, until):
            yield page
            after = (page[-1].time, page[-1].request_id)

    def _page(self, after: tuple[float, str], until: float) -> list[LedgerRecord]:
        conn = self._reader()
        if conn is None:
            return []
        with contextlib.closing(conn):
            rows = conn.execute(
                "SELECT * FROM records WHERE (time, request_id) > (?, ?) AND time < ?"
                " ORDER BY time, request_id LIMIT ?",
                (*after, until, SCAN_PAGE),
            ).fetchall()
        return [_record(row) for row in rows]

    def records(self, since: float = 0.0, until: float = float("inf")) -> list[LedgerRecord]:
        """Stored records by time, for export and calibration (blocking)."""
        conn = self._reader()
        if conn is None:
            return []
        with contextlib.closing(conn):
            rows = conn.execute(
                "SELECT * FROM records WHERE time >= ? AND time < ? ORDER BY time",
                (since, until),
            ).fetchall()
        return [_record(row) for row in rows]


class _Query:
    """The SQL of a report: grouped in SQLite by the report's columns (and always by cache,
    which the savings split needs), so Python folds a few rows, not every group of every day.
    Columns a report does not group by are returned as constants."""

    def __init__(
        self, tagged: bool, tenant: str | None, tag: str | None, by: tuple[str, ...]
    ) -> None:
        self.tagged, self.tenant, self.tag = tagged, tenant, tag
        self.keep = {*by, "cache"}
        if not tagged:
            self.keep.discard("tag")

    def _select(self, columns: dict[str, str]) -> tuple[str, str]:
        constants = {"day": "0", "tag": "NULL", "tenant": "''", "model": "''", "route": "''"}
        select = ", ".join(columns[d] if d in self.keep else constants.get(d, "''") for d in DIMS)
        group = ", ".join(str(i + 1) for i, d in enumerate(DIMS) if d in self.keep)
        return select, group

    def rollups(self, conn: sqlite3.Connection, first: int, stop: int) -> list[Group]:
        where: list[str] = ["day >= ?", "day < ?"]
        params: list[Any] = [first, stop]
        if self.tenant is not None:
            where.append("tenant = ?")
            params.append(self.tenant)
        if self.tag is not None:
            where.append("tag = ?")
            params.append(self.tag)
        columns = {d: d for d in DIMS}
        select, group = self._select(columns)
        table = "rollup_tag" if self.tagged else "rollup"
        sums = ", ".join(f"SUM({name})" for name in NAMES)
        rows = conn.execute(
            f"SELECT {select}, {sums} FROM {table} WHERE {' AND '.join(where)} GROUP BY {group}",
            params,
        )
        return [_group(row) for row in rows]

    def scan(self, conn: sqlite3.Connection, since: float, until: float) -> list[Group]:
        if since >= until:
            return []
        where: list[str] = ["time >= ?", "time < ?"]
        params: list[Any] = [since, until]
        if self.tenant is not None:
            where.append("tenant = ?")
            params.append(self.tenant)
        columns = {
            "day": "day",
            "tag": "NULL",
            "tenant": "tenant",
            "model": "COALESCE(model, '')",
            "route": "COALESCE(route, '')",
            "cache": "cache",
        }
        source = "records"
        if self.tagged:
            source = "records LEFT JOIN json_each(records.tags) AS t"
            columns["tag"] = "COALESCE(t.key || '=' || t.value, '')"
            if self.tag is not None:
                key, _, value = self.tag.partition("=")
                where.append("t.key = ? AND t.value = ?")
                params.extend([key, value])
        select, group = self._select(columns)
        rows = conn.execute(
            f"SELECT {select}, {_RECORD_SUMS} FROM {source} WHERE {' AND '.join(where)} "
            f"GROUP BY {group}",
            params,
        )
        return [_group(row) for row in rows]


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


def _group(row: tuple[Any, ...]) -> Group:
    day, tag, tenant, model, route, cache, *sums = row
    return Group(day, tag, tenant, model, route, cache, Sums(*sums))


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


def _record(row: tuple[Any, ...]) -> LedgerRecord:
    (
        rid,
        t,
        _day,
        tenant,
        tags,
        route,
        model,
        cache,
        inp,
        cached,
        out,
        cost,
        base,
        latency,
        ttft,
        difficulty,
        status,
        stream,
        estimated,
        extra,
    ) = row
    fields: dict[str, Any] = {
        "request_id": rid,
        "time": t,
        "tenant": tenant,
        "tags": msgspec.json.decode(tags),
        "route": route,
        "model": model,
        "cache": cache,
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "cost_usd": None if cost is None else from_nanos(cost),
        "baseline_cost_usd": None if base is None else from_nanos(base),
        "latency_ms": latency,
        "ttft_ms": ttft,
        "difficulty": difficulty,
        "status": status,
        "stream": bool(stream),
        "estimated": bool(estimated),
    }
    if extra:
        fields.update(msgspec.json.decode(extra))
    return msgspec.convert(fields, LedgerRecord)
