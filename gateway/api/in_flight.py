"""Requests being served now: the load signal an autoscaler scales gateway replicas on.

CPU use is a poor signal for a gateway, which mostly waits on upstreams: a replica holding 500
streams idles at a few percent CPU. The number of requests in flight (streams until their last
byte) is what each replica carries, so `gateway_requests_in_flight` is exported for a
HorizontalPodAutoscaler (see deploy/kubernetes). Only the API doors (``/v1/``) count: probes,
scrapes and the admin API are not load.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp


class InFlight:
    """One per app: counts the ``/v1/`` requests its middleware is serving."""

    def __init__(self) -> None:
        self.count = 0

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The middleware factory Litestar takes."""

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
                await app(scope, receive, send)
                return
            self.count += 1
            try:
                await app(scope, receive, send)
            finally:
                self.count -= 1

        return counted

    def __call__(self) -> float:
        return self.count
