"""The shared vector index: the semantic cache's entries in one PostgreSQL table (pgvector),
searched by every replica, instead of a copy of all of them in each replica's memory.

``cache.semantic.index: pgvector`` chooses it; the database is the ledger's
(``GATEWAY_LEDGER_URL``), and its table ``semantic.entries`` comes with ``gateway db upgrade``
(``gateway/semantic/migrations``, applied where the server has pgvector). An entry is a row:
its tenant and context fingerprint (the partition a lookup searches), its creation time (the
TTL), the opening of its question that the meaning guard reads, its payload and its unit
vector. This module only finds candidates: the
cache decides the hit with the same guard as for the local index.

NOTE on the search. One statement per partition and batch of lookups: each query vector is
joined LATERALly to the k nearest rows of its partition (``ORDER BY embedding <#> q LIMIT k``,
inner product of unit vectors). Plans are custom (they see the tenant), so the planner picks the
HNSW index (with pgvector's iterative scan, which keeps walking the graph until k rows of the
partition are found) for a large partition, or the (tenant, fingerprint) b-tree and an exact
sort for a small one. Rows below the threshold are dropped in the statement, so only plausible
hits carry their payload and vector back (binary, no text parsing).

NOTE on what differs from the local index. No LRU: entries leave by age (TTL), by a flush, or,
past ``max_entries`` in the whole table, oldest first (checked against the table's statistics
on each sweep, so the table may overshoot by one sweep's stores). ``max_bytes`` does not apply:
the server's disk holds the entries. ``len`` and the sizes are the server's statistics,
refreshed on each sweep, so nothing on the event loop ever waits on the database.

NOTE on threads and outages. The cache calls from ``threads`` worker threads, each with a
connection of its own (made on its first call), so that lookups run side by side on the server.
A connection error (or a statement slower than ``timeout_s``) degrades the index and retires
every connection (each thread makes a new one on its next call: after a server restart none of
the old ones works): lookups are misses and stores are skipped without touching the network, and
each sweep tries to reconnect; a flush raises :class:`IndexUnavailable` (503). The first
connection, at open, must succeed: a wrong URL, a missing table or extension is a startup error,
not a silently empty cache.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo

from gateway.errors import GatewayError
from gateway.policy.secrets import redact_url
from gateway.semantic.index import Candidate, IndexConfig, StoredEntry, entry_bytes

__all__ = ["TABLE", "IndexUnavailable", "PgvectorIndex", "flush_table"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Vector = npt.NDArray[np.float32]

TABLE = "semantic.entries"
_CHUNK = 10_000
"""Rows an expiry or trim deletes per statement, so that one sweep never holds the worker (and
the lookups queued behind it) for long."""
_FLUSH_TIMEOUT_MS = 120_000
"""A flush may delete a whole table: it gets its own, longer statement timeout."""
_LOST = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
"""Errors that mean the server is away or too slow (``QueryCanceled`` is an
``OperationalError``), as opposed to a bug in a statement."""


class IndexUnavailable(GatewayError):
    """The shared index's database cannot be used (unreachable, or not set up)."""

    status = 503
    default_code = "semantic_index_unavailable"


class _VectorDumper(Dumper):
    """A numpy row as pgvector's binary ``vector``: dimension and a reserved word (uint16 each),
    then big-endian float32s. Registered per connection with the type's oid."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        row = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", row.shape[0], 0) + row.tobytes()


class _VectorLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> Vector:
        return np.frombuffer(bytes(data), dtype=">f4", offset=4).astype(np.float32)


def _search_statement(rows: int) -> str:
    values = ", ".join(f"({i}, %(v{i})b)" for i in range(rows))
    return f"""
        SELECT q.i, c.id, c.score, c.text, c.created, c.payload, c.embedding
        FROM (VALUES {values}) AS q(i, v)
        CROSS JOIN LATERAL (
            SELECT e.id, e.text, e.created, e.payload, e.embedding,
                   -(e.embedding <#> q.v) AS score
            FROM {TABLE} e
            WHERE e.tenant = %(tenant)s AND e.fingerprint = %(fingerprint)s
              AND e.created >= %(since)s
            ORDER BY e.embedding <#> q.v
            LIMIT %(k)s
        ) c
        WHERE c.score >= %(threshold)s
        ORDER BY q.i, c.score DESC"""


_INSERT = (
    f"INSERT INTO {TABLE} (id, tenant, fingerprint, created, text, payload, embedding) "
    "VALUES (%s, %s, %s, %s, %s, %s, %b) ON CONFLICT (id) DO NOTHING"
)
_EXPIRE = f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE created < %s LIMIT %s)"
_TRIM = f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} ORDER BY created LIMIT %s)"
_STATS = (
    f"SELECT n_live_tup, pg_total_relation_size('{TABLE}') FROM pg_stat_user_tables "
    f"WHERE relid = '{TABLE}'::regclass"
)


def connect(url: str, timeout_s: float, ef_search: int = 64) -> psycopg.Connection:
    """A connection ready for the index: the extension's schema on the search path (for the
    operators), pgvector's types adapted in binary, custom plans, no JIT (these statements are
    short; JIT would compile for tens of ms on a large table's cost estimates), HNSW's search
    breadth (``ef_search``, the local index's) and iterative scan. Raises
    :class:`IndexUnavailable` when the table, the extension or the server is missing."""
    timeout_ms = max(1, int(timeout_s * 1000))
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=max(2, math.ceil(timeout_s)),
            tcp_user_timeout=timeout_ms,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
    except psycopg.Error as exc:
        raise IndexUnavailable(f"the semantic index's database cannot be reached: {exc}") from exc
    try:
        _prepare(conn, timeout_ms, ef_search)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: psycopg.Connection, timeout_ms: int, ef_search: int) -> None:
    found = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
    ).fetchone()
    table = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
    if found is None or table is None or table[0] is None:
        raise IndexUnavailable(
            f"the database has no {TABLE} table: install pgvector on the server, then run "
            "`gateway db upgrade`"
        )
    conn.execute("SELECT set_config('search_path', %s, false)", (f"{found[0]}, public",))
    conn.execute("SELECT '[0]'::vector")  # loads pgvector, so that its settings below exist
    settings = {
        "jit": "off",
        "plan_cache_mode": "force_custom_plan",
        "statement_timeout": str(timeout_ms),
        "hnsw.ef_search": str(ef_search),
        "hnsw.iterative_scan": "relaxed_order",
    }
    for name, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    info = TypeInfo.fetch(conn, "vector")
    if info is None:  # the extension was just found: only a concurrent DROP gets here
        raise IndexUnavailable("the pgvector extension vanished")
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(np.ndarray, dumper)
    conn.adapters.register_loader(info.oid, _VectorLoader)


def flush_table(url: str, tenant: str | None, timeout_s: float = 2.0) -> int:
    """Delete ``tenant``'s entries (all when None) from the shared table, for a process that
    never opened the index; 0 when the database has no such table."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(2, int(timeout_s))) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
            if row is None or row[0] is None:
                return 0
            return _delete_tenant(conn, tenant)
    except _LOST as exc:
        raise IndexUnavailable(f"the semantic index's database cannot be reached: {exc}") from exc


def _delete_tenant(conn: psycopg.Connection, tenant: str | None) -> int:
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {_FLUSH_TIMEOUT_MS}")
        if tenant is None:
            cursor = conn.execute(f"DELETE FROM {TABLE}")
        else:
            cursor = conn.execute(f"DELETE FROM {TABLE} WHERE tenant = %s", (tenant,))
        return cursor.rowcount


class PgvectorIndex:
    """The :class:`~gateway.semantic.index.VectorIndex` on PostgreSQL. :meth:`connect` once
    (in the worker thread), :meth:`close` at the end. See the module docstring."""

    kind = "pgvector"

    def __init__(
        self,
        config: IndexConfig,
        url: str,
        clock: Callable[[], float] = time.time,
        *,
        timeout_s: float = 1.0,
        threads: int = 4,
    ) -> None:
        self.config = config
        self.url = url
        self.threads = threads
        self._clock = clock
        self._timeout_s = timeout_s
        self._here = threading.local()
        """This thread's connection and the generation it was made in."""
        self._lock = threading.Lock()
        self._open: list[psycopg.Connection] = []
        self._generation = 0
        """Bumped when the server is lost: older connections are retired."""
        self._degraded: str | None = None
        self._entries = 0
        self._server_bytes = 0
        self.expired = 0
        self.trimmed = 0
        self.too_large = 0

    # ---- life ----------------------------------------------------------------------------

    def connect(self) -> None:
        """The first connection; raises :class:`IndexUnavailable`, naming the database (its
        credentials redacted) and what is wrong."""
        try:
            self._refresh(self._connection())
        except IndexUnavailable as exc:
            raise IndexUnavailable(
                f"cache.semantic.index: pgvector at {redact_url(self.url)} "
                f"(GATEWAY_LEDGER_URL): {exc.message}"
            ) from exc

    def close(self) -> None:
        """Close every connection (at the end, when no thread uses them any more)."""
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.close()

    @property
    def degraded_reason(self) -> str | None:
        return self._degraded

    # ---- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._entries

    def search(
        self,
        tenant: str,
        fingerprint: str,
        vectors: Vector,
        threshold: float,
        max_age_s: float | None = None,
    ) -> list[list[Candidate]]:
        """As :meth:`LocalIndex.search <gateway.semantic.index.LocalIndex.search>`, each
        candidate with its vector; no candidates while degraded."""
        out: list[list[Candidate]] = [[] for _ in range(len(vectors))]
        if self._degraded is not None:
            return out
        ttl = self.config.ttl_s if max_age_s is None else min(self.config.ttl_s, max_age_s)
        params: dict[str, Any] = {f"v{i}": row for i, row in enumerate(vectors)}
        params.update(
            tenant=tenant,
            fingerprint=fingerprint,
            since=self._clock() - ttl,
            k=self.config.candidates,
            threshold=threshold,
        )
        statement = _search_statement(len(vectors))
        try:
            rows = self._call(lambda c: c.execute(statement, params, binary=True).fetchall())
        except IndexUnavailable:
            return out
        for i, entry_id, score, text, created, payload, vector in rows:
            entry = StoredEntry(entry_id, tenant, fingerprint, text, payload, created)
            out[i].append(Candidate(entry, float(score), vector))
        return out

    def fits(self, entry: StoredEntry) -> bool:
        return entry_bytes(entry) <= self.config.max_entry_bytes

    def touch(self, entry_id: int) -> None:
        """Nothing: this index keeps no recency (see the module docstring)."""

    def stats(self) -> dict[str, Any]:
        return {
            "entries": self._entries,
            "server_bytes": self._server_bytes,
            "expired": self.expired,
            "evicted": self.trimmed,
            "too_large": self.too_large,
        }

    # ---- writing -------------------------------------------------------------------------

    def add(self, entries: Iterable[tuple[StoredEntry, Vector]]) -> int:
        """Insert entries (known ids, expired ones and ones over ``max_entry_bytes`` are
        skipped); returns how many were inserted, 0 while degraded."""
        now = self._clock()
        rows = []
        for entry, vector in entries:
            if now - entry.created > self.config.ttl_s:
                continue
            if not self.fits(entry):
                self.too_large += 1
                continue
            rows.append(
                (
                    entry.entry_id,
                    entry.tenant,
                    entry.fingerprint,
                    entry.created,
                    entry.text,
                    entry.payload,
                    vector,
                )
            )
        if not rows or self._degraded is not None:
            return 0
        try:
            return self._call(lambda c: _insert(c, rows))
        except IndexUnavailable:
            return 0

    def remove(self, entry_ids: Iterable[int]) -> int:
        """Delete entries (an unusable one the cache found); 0 while the server is away, as
        the Redis mirror skips a delete: the entry is then found and discarded again."""
        ids = list(entry_ids)
        statement = f"DELETE FROM {TABLE} WHERE id = ANY(%s)"
        if not ids or self._degraded is not None:
            return 0
        try:
            return self._call(lambda c: c.execute(statement, (ids,)).rowcount)
        except IndexUnavailable:
            return 0

    def remove_tenant(self, tenant: str | None) -> int:
        """Delete ``tenant``'s entries (all when None); raises :class:`IndexUnavailable`."""
        return self._call(lambda c: _delete_tenant(c, tenant))

    def expire(self) -> int:
        """The sweep: reconnect when degraded, delete expired rows (and the oldest past
        ``max_entries``), and refresh the statistics; returns how many expired."""
        try:
            count = self._call(self._expire_sync)
        except (IndexUnavailable, psycopg.Error) as exc:
            if not isinstance(exc, IndexUnavailable):
                log.warning("semantic index sweep failed: %r", exc)
            return 0
        self.expired += count
        return count

    # ---- internals -----------------------------------------------------------------------

    def _expire_sync(self, conn: psycopg.Connection) -> int:
        count = conn.execute(_EXPIRE, (self._clock() - self.config.ttl_s, _CHUNK)).rowcount
        self._refresh(conn)
        excess = self._entries - self.config.max_entries
        if excess > 0:
            self.trimmed += conn.execute(_TRIM, (min(excess, _CHUNK),)).rowcount
        return count

    def _refresh(self, conn: psycopg.Connection) -> None:
        row = conn.execute(_STATS).fetchone()
        self._entries, self._server_bytes = (int(row[0]), int(row[1])) if row else (0, 0)

    def _connection(self) -> psycopg.Connection:
        """This thread's connection, made anew when it has none, it broke, or it is older
        than the last loss of the server."""
        conn: psycopg.Connection | None = getattr(self._here, "conn", None)
        if conn is not None and not conn.broken and self._here.generation == self._generation:
            return conn
        if conn is not None:
            with self._lock:
                if conn in self._open:
                    self._open.remove(conn)
            conn.close()
        generation = self._generation
        conn = connect(self.url, self._timeout_s, self.config.hnsw_ef_search)
        with self._lock:
            self._open.append(conn)
        self._here.conn, self._here.generation = conn, generation
        return conn

    def _call(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn`` on this thread's connection; a lost server degrades the index and raises
        :class:`IndexUnavailable`."""
        try:
            result = fn(self._connection())
        except _LOST as exc:
            self._lost(exc)
            raise IndexUnavailable(f"semantic index unreachable: {exc}") from exc
        except IndexUnavailable as exc:
            self._lost(exc)
            raise
        if self._degraded is not None:
            log.warning("semantic index recovered: PostgreSQL answers again")
            self._degraded = None
        return result

    def _lost(self, exc: BaseException) -> None:
        reason = f"postgresql: {type(exc).__name__}: {exc}"[:300]
        if self._degraded is None:
            log.warning("semantic index degraded (%s): lookups miss, stores are skipped", reason)
        self._degraded = reason
        self._generation += 1


def _insert(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> int:
    with conn.cursor() as cursor:
        cursor.executemany(_INSERT, rows)
        return cursor.rowcount
