"""``GET /metrics``: the app's Prometheus exposition (OpenMetrics when the scraper asks)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.telemetry.core import Telemetry


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Reads the `Telemetry` from ``app.state.telemetry``."""
    telemetry: Telemetry = request.app.state.telemetry
    body, content_type = telemetry.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
