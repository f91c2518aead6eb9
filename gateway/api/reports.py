"""Admin endpoints for cost: the report as JSON or CSV, and the dashboard page.

The report needs the admin key. The dashboard is one self-contained HTML page (Chart.js, MIT,
is inlined from ``static/``: no CDN is reachable from where gateways usually run) that holds
no data at all, so it is served to anyone: a browser cannot send a header when it opens a
page, and a key in the address (``?key=``) would stay in the browser's history and in proxy
logs. The page asks for the key in a form, keeps it in ``sessionStorage`` (this tab only) and
fetches everything it shows from ``/admin/reports/cost`` with it as a bearer header.
"""

from __future__ import annotations

import functools
import secrets
import time
from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency

from gateway.errors import BadRequest
from gateway.ledger.base import Ledger
from gateway.ledger.window import iso, parse_by, parse_when

_FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


@get("/admin/reports/cost")
async def cost_report(
    request: Request[Any, Any, Any],
    ledger: NamedDependency[Ledger],
    admin: NamedDependency[str],
) -> Response[bytes]:
    """Query: since, until (``7d``, ISO, unix), by (``model,route``), tenant, tag, format."""
    query = request.query_params
    now = time.time()
    since = _when(query.get("since") or "7d", now, "since")
    until = _when(query.get("until") or "now", now, "until")
    if since >= until:
        raise BadRequest("'since' must be before 'until'.", param="since")
    try:
        by = parse_by(query.getall("by", []))
    except ValueError as exc:
        raise BadRequest(str(exc), param="by") from None
    form = (query.get("format") or "json").lower()
    if form not in _FORMATS:
        raise BadRequest("'format' must be json or csv.", param="format")
    tag = query.get("tag") or None
    if tag is not None and "=" not in tag:
        raise BadRequest("'tag' must be key=value.", param="tag")
    await ledger.flush(timeout_s=2.0)  # include what was recorded a moment ago
    report = await ledger.report(since, until, by, tenant=query.get("tenant") or None, tag=tag)
    headers = {
        "x-gateway-report-since": iso(report.since),
        "x-gateway-report-until": iso(report.until),
        "cache-control": "no-store",
    }
    if form == "csv":
        headers["content-disposition"] = 'attachment; filename="cost-report.csv"'
        return Response(report.to_csv().encode(), media_type=_FORMATS[form], headers=headers)
    return Response(report.to_json(), media_type=_FORMATS[form], headers=headers)


@get("/admin/dashboard")
async def dashboard() -> Response[bytes]:
    """The cost dashboard's page, the same for everyone: it holds no data (see the module
    docstring); everything it shows comes from the report, with the key the page asks for."""
    nonce = secrets.token_urlsafe(16)
    page = _page().replace("__NONCE__", nonce)
    return Response(
        page.encode(),
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            ),
            "cache-control": "no-store",
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
        },
    )


@functools.cache
def _page() -> str:
    static = resources.files("gateway.ledger") / "static"
    template = (static / "dashboard.html").read_text(encoding="utf-8")
    chart_js = (static / "chart.umd.min.js").read_text(encoding="utf-8")
    return template.replace("/*__CHART_JS__*/", chart_js)


def _when(text: str, now: float, name: str) -> float:
    try:
        return parse_when(text, now)
    except ValueError as exc:
        raise BadRequest(str(exc), param=name) from None


ROUTES = [cost_report, dashboard]
