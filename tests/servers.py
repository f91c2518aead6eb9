"""Real HTTP servers on 127.0.0.1 for tests: any ASGI app, served by uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def free_port() -> int:
    """A loopback port nothing listens on now (for a server started in a child process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """Serve ``app`` on a free loopback port until `stop` (or the end of a ``with`` block)."""

    def __init__(self, app: Any, *, lifespan: str = "on") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            ws="none",
            interface="asgi3",
            loop="asyncio",
            http="h11",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 300  # a policy with a local model loads it first
        while not self._server.started:
            if not self._thread.is_alive():
                self._sock.close()
                raise RuntimeError("the server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start within 300 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self.stop()
