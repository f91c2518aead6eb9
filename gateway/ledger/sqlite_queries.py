"""What the SQLite ledger reads: reports, budget spend and pages of records.

A report over whole UTC days reads only the rollups (a few rows per day, whatever the traffic);
the partial days at either end of its period are summed from ``records`` by time, so a report
is exact to the second and reads at most two days of records. SQLite does the grouping (by the
report's columns), so Python folds only the rows of the report.

Each function takes an open connection and only reads; `gateway.ledger.sqlite_store` decides
which connection and which thread.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group
from gateway.ledger.rows import record_of
from gateway.ledger.sums import DAY_S, NAMES, Sums, day_of

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


class ReportQuery:
    """The SQL of a report: grouped in SQLite by the report's columns (and always by cache,
    which the savings split needs), so Python folds a few rows, not every group of every day.
    Columns a report does not group by are returned as constants."""

    def __init__(
        self, tagged: bool, tenant: str | None, tag: str | None, by: tuple[str, ...] = DIMS
    ) -> None:
        self.tagged, self.tenant, self.tag = tagged, tenant, tag
        self.keep = {*by, "cache"}
        if not tagged:
            self.keep.discard("tag")

    def groups(self, conn: sqlite3.Connection, since: float, until: float) -> list[Group]:
        """The groups of ``[since, until)``: rollups for the whole days, records for the rest."""
        first = -(-since // DAY_S) * DAY_S  # the start of the first whole day
        last = until // DAY_S * DAY_S  # the end of the last whole day
        if first >= last:
            return self.scan(conn, since, until)
        return [
            *self.scan(conn, since, first),
            *self.rollups(conn, day_of(first), day_of(last)),
            *self.scan(conn, last, until),
        ]

    def rollups(self, conn: sqlite3.Connection, first: int, stop: int) -> list[Group]:
        """The groups of days ``[first, stop)``, from the rollups."""
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
        """The groups of ``[since, until)``, summed from the records."""
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

    def _select(self, columns: dict[str, str]) -> tuple[str, str]:
        constants = {"day": "0", "tag": "NULL", "tenant": "''", "model": "''", "route": "''"}
        select = ", ".join(columns[d] if d in self.keep else constants.get(d, "''") for d in DIMS)
        group = ", ".join(str(i + 1) for i, d in enumerate(DIMS) if d in self.keep)
        return select, group


def spend_by_day(conn: sqlite3.Connection, tenant: str, days: range) -> dict[int, int]:
    """The tenant's stored cost in nano-dollars per day of ``days`` (days without any left out)."""
    rows = conn.execute(
        "SELECT day, SUM(cost) FROM rollup WHERE tenant = ? AND day >= ? AND day < ? GROUP BY day",
        (tenant, days.start, days.stop),
    )
    return {day: total for day, total in rows}


def records_after(
    conn: sqlite3.Connection, after: tuple[float, str], until: float, limit: int = -1
) -> list[LedgerRecord]:
    """The records after ``after`` (a ``(time, request_id)``) and before ``until``, in that
    order, at most ``limit`` of them (-1: all); keyset paging on the primary key."""
    rows = conn.execute(
        "SELECT * FROM records WHERE (time, request_id) > (?, ?) AND time < ?"
        " ORDER BY time, request_id LIMIT ?",
        (*after, until, limit),
    ).fetchall()
    return [record_of(row) for row in rows]


def _group(row: tuple[Any, ...]) -> Group:
    day, tag, tenant, model, route, cache, *sums = row
    return Group(day, tag, tenant, model, route, cache, Sums(*sums))
