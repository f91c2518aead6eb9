"""What the SQL ledgers (SQLite, PostgreSQL) read: reports, budget spend and pages of records.

A report over whole UTC days reads only the rollups (a few rows per day, whatever the traffic);
the partial days at either end of its period are summed from ``records`` by time, so a report
is exact to the second and reads at most two days of records. Where the store also keeps the
tags' hourly rollups (PostgreSQL), a tagged report reads the whole hours of those partial days
from them, and only the partial hours from ``records``. The database does the grouping (by the
report's columns), so Python folds only the rows of the report.

Both stores have the same tables (`gateway.ledger.rows`); a `Dialect` holds what their SQL
spells differently. Each function takes an open DB-API connection and only reads; the stores
decide which connection and which thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group
from gateway.ledger.rows import COLUMNS, record_of
from gateway.ledger.sums import DAY_S, NAMES, Sums, day_of


class Connection(Protocol):
    """What the queries need of a DB-API connection (sqlite3's, psycopg's)."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    param: str
    """The parameter placeholder."""
    tags: str
    """A join of ``records`` with its tags as rows ``t(key, value)``."""
    tag_hours: bool = False
    """Whether the store keeps ``rollup_tag_hour`` (the sums of each tag per UTC hour)."""


SQLITE = Dialect(param="?", tags="records LEFT JOIN json_each(records.tags) AS t")
POSTGRES = Dialect(
    param="%s",
    tags="records LEFT JOIN LATERAL jsonb_each_text(records.tags::jsonb) AS t(key, value) ON true",
    tag_hours=True,
)

DIMS = ("day", "tag", "tenant", "model", "route", "cache")
"""The columns of a `Group`, in order."""
HOUR_S = 3600
"""The period of ``rollup_tag_hour``'s rows."""
# The same sums as `Sums.of`, over records (for the partial days at the ends of a period).
_RECORD_SUMS = """
    COUNT(*), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens),
    COALESCE(SUM(CASE WHEN cost_nusd IS NOT NULL THEN input_tokens + output_tokens END), 0),
    COALESCE(SUM(cost_nusd), 0), SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(baseline_nusd), 0), SUM(CASE WHEN baseline_nusd IS NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN cost_nusd IS NOT NULL AND baseline_nusd IS NOT NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(baseline_nusd - cost_nusd), 0)
"""


class ReportQuery:
    """The SQL of a report: grouped in SQLite by the report's columns (and always by cache,
    which the savings split needs), so Python folds a few rows, not every group of every day.
    Columns a report does not group by are returned as constants."""

    def __init__(
        self,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...] = DIMS,
        dialect: Dialect = SQLITE,
    ) -> None:
        self.tagged, self.tenant, self.tag, self.dialect = tagged, tenant, tag, dialect
        self.keep = {*by, "cache"}
        if not tagged:
            self.keep.discard("tag")

    def groups(self, conn: Connection, since: float, until: float) -> list[Group]:
        """The groups of ``[since, until)``: rollups for the whole days, the rest by `partial`."""
        first, last = _whole(since, until, DAY_S)
        if first >= last:
            return self.partial(conn, since, until)
        return [
            *self.partial(conn, since, first),
            *self.rollups(conn, day_of(first), day_of(last)),
            *self.partial(conn, last, until),
        ]

    def partial(self, conn: Connection, since: float, until: float) -> list[Group]:
        """The groups of a period within a day: from the records, but a tagged report reads
        its whole hours from the hourly rollups where the store keeps them."""
        if not (self.tagged and self.dialect.tag_hours):
            return self.scan(conn, since, until)
        first, last = _whole(since, until, HOUR_S)
        if first >= last:
            return self.scan(conn, since, until)
        return [
            *self.scan(conn, since, first),
            *self.rollups(conn, int(first // HOUR_S), int(last // HOUR_S), hourly=True),
            *self.scan(conn, last, until),
        ]

    def rollups(self, conn: Connection, first: int, stop: int, hourly: bool = False) -> list[Group]:
        """The groups of days ``[first, stop)`` from the rollups (``hourly``: of hours, from
        the tags' hourly rollups)."""
        p = self.dialect.param
        unit = "hour" if hourly else "day"
        where: list[str] = [f"{unit} >= {p}", f"{unit} < {p}"]
        params: list[Any] = [first, stop]
        if self.tenant is not None:
            where.append(f"tenant = {p}")
            params.append(self.tenant)
        if self.tag is not None:
            where.append(f"tag = {p}")
            params.append(self.tag)
        columns = {d: d for d in DIMS}
        if hourly:
            columns["day"] = f"hour / {DAY_S // HOUR_S}"  # the UTC day of an hour (>= 0)
        select, group = self._select(columns)
        table = "rollup_tag_hour" if hourly else "rollup_tag" if self.tagged else "rollup"
        sums = ", ".join(f'SUM("{name}")' for name in NAMES)  # "both" is a keyword in PostgreSQL
        rows = conn.execute(
            f"SELECT {select}, {sums} FROM {table} WHERE {' AND '.join(where)} GROUP BY {group}",
            params,
        )
        return [_group(row) for row in rows]

    def scan(self, conn: Connection, since: float, until: float) -> list[Group]:
        """The groups of ``[since, until)``, summed from the records."""
        if since >= until:
            return []
        p = self.dialect.param
        where: list[str] = [f"time >= {p}", f"time < {p}"]
        params: list[Any] = [since, until]
        if self.tenant is not None:
            where.append(f"tenant = {p}")
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
            source = self.dialect.tags
            columns["tag"] = "COALESCE(t.key || '=' || t.value, '')"
            if self.tag is not None:
                key, _, value = self.tag.partition("=")
                where.append(f"t.key = {p} AND t.value = {p}")
                params.extend([key, value])
        select, group = self._select(columns)
        rows = conn.execute(
            f"SELECT {select}, {_RECORD_SUMS} FROM {source} WHERE {' AND '.join(where)} "
            f"GROUP BY {group}",
            params,
        )
        return [_group(row) for row in rows]

    def _select(self, columns: dict[str, str]) -> tuple[str, str]:
        constants = {"day": "0", "tag": "NULL", "tenant": "''", "model": "''", "route": "''"}
        select = ", ".join(columns[d] if d in self.keep else constants.get(d, "''") for d in DIMS)
        group = ", ".join(str(i + 1) for i, d in enumerate(DIMS) if d in self.keep)
        return select, group


def spend_by_day(
    conn: Connection, tenant: str, days: range, dialect: Dialect = SQLITE
) -> dict[int, int]:
    """The tenant's stored cost in nano-dollars per day of ``days`` (days without any left out)."""
    p = dialect.param
    rows = conn.execute(
        f"SELECT day, SUM(cost) FROM rollup WHERE tenant = {p} AND day >= {p} AND day < {p}"
        " GROUP BY day",
        (tenant, days.start, days.stop),
    )
    return {day: int(total) for day, total in rows}


def records_after(
    conn: Connection,
    after: tuple[float, str],
    until: float,
    limit: int | None = None,
    dialect: Dialect = SQLITE,
) -> list[LedgerRecord]:
    """The records after ``after`` (a ``(time, request_id)``) and before ``until``, in that
    order, at most ``limit`` of them (None: all); keyset paging on ``(time, request_id)``."""
    p = dialect.param
    columns = ", ".join(COLUMNS)
    sql = (
        f"SELECT {columns} FROM records WHERE (time, request_id) > ({p}, {p}) AND time < {p}"
        " ORDER BY time, request_id"
    )
    params: tuple[Any, ...] = (*after, until)
    if limit is not None:
        sql += f" LIMIT {p}"
        params = (*params, limit)
    return [record_of(tuple(row)) for row in conn.execute(sql, params).fetchall()]


def _whole(since: float, until: float, unit: int) -> tuple[float, float]:
    """The start of the first whole ``unit`` (seconds) in ``[since, until)``, and the end of the
    last one (the first is not before the last when there is none)."""
    return -(-since // unit) * unit, until // unit * unit


def _group(row: tuple[Any, ...]) -> Group:
    day, tag, tenant, model, route, cache, *sums = row
    return Group(day, tag, tenant, model, route, cache, Sums(*(int(v) for v in sums)))
