"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

The page is served by a real app over a ledger filled with five days of traffic; the test
checks that every chart is drawn with data: canvases with painted pixels, the cost chart's
legend naming exactly the ledger's models, and the numbers matching the report endpoint.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import LedgerRecord
from tests.integration.ledger.app import ADMIN_KEY, make_app
from tests.integration.ledger.test_http import fill, history
from tests.servers import ServerThread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
CHARTS = ["chart-cost", "chart-savings", "chart-hits", "chart-routes", "chart-mtok"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerThread, list[LedgerRecord]]]:
    records = history(time.time())
    fill(tmp_path, records)
    with ServerThread(make_app(tmp_path)) as running:
        yield running, records


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1200})
            yield context.new_page()
        finally:
            browser.close()


PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  return painted;
}"""

SUMMARY = """() => Object.fromEntries(Object.entries(window.dashboardCharts).map(([id, chart]) => [
  id,
  {
    labels: chart.data.labels,
    datasets: chart.data.datasets.map((d) => ({
      label: d.label,
      points: d.data.filter((v) => v !== null && v !== 0).length,
    })),
    legend: chart.legend.legendItems.map((item) => item.text),
  },
]))"""


def test_the_dashboard_draws_every_chart_with_data(
    server: tuple[ServerThread, list[LedgerRecord]], page: Any, tmp_path: Path
) -> None:
    running, records = server
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    sign_in(page, running.url, ADMIN_KEY)
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    assert errors == []

    charts = page.evaluate(SUMMARY)
    assert sorted(charts) == sorted(CHARTS)
    for chart_id in CHARTS:
        assert page.evaluate(PAINTED, chart_id) > 1000, f"{chart_id} is blank"

    models = sorted({r.model for r in records if r.model})
    cost = charts["chart-cost"]
    assert cost["legend"] == models
    assert [d["label"] for d in cost["datasets"]] == models
    priced = {r.model for r in records if r.cost_usd}
    for dataset in cost["datasets"]:
        assert (dataset["points"] >= 5) == (dataset["label"] in priced), dataset
    assert len(cost["labels"]) == 8  # the last 7 days and today

    savings = {d["label"]: d["points"] for d in charts["chart-savings"]["datasets"]}
    assert savings["Baseline cost"] >= 5 and savings["Actual cost"] >= 5
    assert savings["Cache savings"] >= 5 and savings["Routing savings"] >= 5
    assert charts["chart-hits"]["datasets"][0]["points"] >= 5
    assert sorted(charts["chart-routes"]["legend"]) == ["cache", "default", "hard"]
    assert charts["chart-mtok"]["datasets"][0]["points"] >= 5

    cards = page.inner_text("#cards")
    assert f"{len(records):,}" in cards
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # the tenant filter narrows every chart to that tenant's traffic
    page.select_option("#tenant", "team-b")
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    charts = page.evaluate(SUMMARY)
    assert [d["label"] for d in charts["chart-cost"]["datasets"]] == ["large"]
    assert charts["chart-routes"]["legend"] == ["hard"]
    assert errors == []


def sign_in(page: Any, url: str, key: str) -> None:
    """Open the page (no key: it asks for one) and sign in with its form."""
    page.goto(f"{url}/admin/dashboard")
    page.wait_for_selector("body[data-state=login]", timeout=15_000)
    page.fill("#key", key)
    page.click("#apply")


def test_the_key_comes_from_the_form_and_stays_for_the_tab(
    server: tuple[ServerThread, list[LedgerRecord]], page: Any
) -> None:
    running, _ = server
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    sign_in(page, running.url, ADMIN_KEY)
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    assert all("key=" not in url for url in fetched)  # sent as a header, never in an address
    assert page.input_value("#key") == ""
    page.reload()  # the tab keeps the key: no form this time
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    page.click("#signout")
    page.wait_for_selector("body[data-state=login]", timeout=15_000)
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.inner_text("#cards") == ""


def test_a_key_in_the_address_is_not_used(
    server: tuple[ServerThread, list[LedgerRecord]], page: Any
) -> None:
    running, _ = server
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(f"{running.url}/admin/dashboard?key={ADMIN_KEY}&period=30d")
    page.wait_for_selector("body[data-state=login]", timeout=15_000)
    assert "key=" not in page.url and "period=30d" in page.url  # removed from the address
    assert "not taken from the address" in page.inner_text("#status")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert not [url for url in fetched if "/admin/reports/" in url]
    assert page.input_value("#period") == "30d"


def test_a_wrong_key_shows_an_error_not_a_blank_page(
    server: tuple[ServerThread, list[LedgerRecord]], page: Any
) -> None:
    running, _ = server
    sign_in(page, running.url, ADMIN_KEY)
    page.wait_for_selector("body[data-state=ready]", timeout=15_000)
    page.fill("#key", "sk-wrong")
    page.click("#apply")
    page.wait_for_selector("body[data-state=error]", timeout=15_000)
    assert "admin key" in page.inner_text("#status")
    assert page.evaluate("() => sessionStorage.length") == 0  # a refused key is not kept
