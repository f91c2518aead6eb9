"""GET /admin/reports/cost and GET /admin/dashboard over real HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.ledger import LedgerRecord, open_ledger
from tests.integration.ledger.app import ADMIN_KEY, make_app
from tests.servers import ServerThread
from tests.unit.ledger.helpers import rec

DAY = 86_400


def history(now: float) -> list[LedgerRecord]:
    """Five days of traffic for two tenants over three models."""
    records = []
    for day in range(5):
        for i in range(12):
            t = now - day * DAY - i * 600
            records.append(rec(t, model="small", route="default", cost="0.0002", tenant="team-a"))
            records.append(
                rec(t, model="large", route="hard", cost="0.004", baseline="0.004",
                    tenant="team-b", tags={"app": "chat"})
            )  # fmt: skip
            if i % 3 == 0:
                records.append(rec(t, model="large", route="cache", cache="exact", cost="0"))
            if i % 4 == 0:
                records.append(rec(t, model="local", route="default", cost=None))
    return records


def fill(data_dir: Path, records: list[LedgerRecord]) -> None:
    async def run() -> None:
        ledger = open_ledger(None, data_dir)
        await ledger.start()
        for r in records:
            ledger.record(r)
        await ledger.aclose()

    asyncio.run(run())


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[LedgerRecord]]:
    records = history(time.time())
    fill(tmp_path, records)
    return tmp_path, records


@pytest.fixture
def server(filled: tuple[Path, list[LedgerRecord]]) -> Iterator[ServerThread]:
    with ServerThread(make_app(filled[0])) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def test_the_report_needs_the_admin_key(client: httpx.Client) -> None:
    for headers in ({}, {"authorization": "Bearer sk-wrong"}):
        response = client.get("/admin/reports/cost", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_json_report(client: httpx.Client, filled: tuple[Path, list[LedgerRecord]]) -> None:
    records = filled[1]
    response = client.get(
        "/admin/reports/cost", params={"since": "30d", "by": "model"}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"totals", "rows"}
    totals = body["totals"]
    assert totals["requests"] == len(records)
    assert Decimal(totals["cost_usd"]) == sum(
        (r.cost_usd for r in records if r.cost_usd is not None), Decimal(0)
    )
    assert totals["unpriced_requests"] == sum(1 for r in records if r.cost_usd is None)
    assert {row["model"] for row in body["rows"]} == {"small", "large", "local"}
    assert response.headers["x-gateway-report-since"].endswith("+00:00")


def test_filters_by_tenant_tag_and_period(client: httpx.Client) -> None:
    def totals(**params: str) -> dict[str, object]:
        response = client.get("/admin/reports/cost", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()["totals"]  # type: ignore[no-any-return]

    assert totals(since="30d", tenant="team-b")["requests"] == 60
    assert totals(since="30d", tag="app=chat")["requests"] == 60
    assert totals(since="30d", tag="app=other")["requests"] == 0
    assert totals(since="1h")["requests"] < totals(since="30d")["requests"]
    day_rows = client.get(
        "/admin/reports/cost", params={"since": "30d", "by": "day"}, headers=ADMIN
    ).json()["rows"]
    assert 5 <= len(day_rows) <= 6


def test_csv_report(client: httpx.Client) -> None:
    response = client.get(
        "/admin/reports/cost",
        params={"since": "30d", "by": "tenant,cache", "format": "csv"},
        headers=ADMIN,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0][:3] == ["tenant", "cache", "requests"]
    assert len(lines) == 1 + 3  # team-a miss, team-b miss, team-a exact


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"since": "yesterday-ish"}, "since"),
        ({"until": "soon"}, "until"),
        ({"since": "1h", "until": "2h"}, "since"),
        ({"by": "colour"}, "by"),
        ({"format": "xml"}, "format"),
        ({"tag": "no-equals"}, "tag"),
    ],
)
def test_bad_queries_are_400_in_openai_shape(
    client: httpx.Client, params: dict[str, str], param: str
) -> None:
    response = client.get("/admin/reports/cost", params=params, headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def test_the_dashboard_page_is_one_data_free_shell_for_everyone(
    client: httpx.Client, filled: tuple[Path, list[LedgerRecord]]
) -> None:
    """The page holds no data (its data comes from the report, with the key the page asks
    for), so it is the same with or without the key; a key in the address is never used."""
    shells = []
    for kwargs in ({}, {"headers": ADMIN}, {"params": {"key": ADMIN_KEY}}):
        response = client.get("/admin/dashboard", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "Chart.js v4" in response.text  # inlined: no CDN at run time
        policy = response.headers["content-security-policy"]
        nonce = policy.split("'nonce-")[1].split("'")[0]
        assert response.text.count(f'nonce="{nonce}"') == 2
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert ADMIN_KEY not in response.text
        shells.append(response.text.replace(nonce, "NONCE"))
    assert shells[0] == shells[1] == shells[2]
    for record in filled[1]:  # nothing of the ledger
        assert record.tenant not in shells[0] and record.request_id not in shells[0]
