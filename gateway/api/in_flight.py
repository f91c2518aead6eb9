"""Counts the live model requests (`gateway.runtime.live.LiveTraffic`): the load signal an
autoscaler scales gateway replicas on, and what batch work yields to.

CPU use is a poor signal for a gateway, which mostly waits on upstreams: a replica holding 500
streams idles at a few percent CPU. The number of requests in flight (streams until their last
byte) is what each replica carries, so it is exported as `gateway_requests_in_flight` for a
HorizontalPodAutoscaler (see deploy/kubernetes). Only requests to models count: probes, scrapes,
the admin API and the Files and Batch APIs (a client polling its batch is not live work) do not.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp

from gateway.runtime.live import LiveTraffic

_NOT_LIVE = ("/v1/files", "/v1/batches", "/v1/models")


def count_live(live: LiveTraffic) -> Any:
    """The middleware factory Litestar takes."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def counted(scope: Any, receive: Any, send: Any) -> None:
            path: str = scope.get("path", "")
            if scope["type"] != "http" or not path.startswith("/v1/") or path.startswith(_NOT_LIVE):
                await app(scope, receive, send)
                return
            entered = live.enter()
            try:
                await app(scope, receive, send)
            finally:
                live.leave(entered)

        return counted

    return wrap
