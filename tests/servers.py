"""Real servers on 127.0.0.1 for tests: any ASGI app served by uvicorn in a thread, the base of
the fake upstreams (`Served`, `ScriptedServer`), and a redis-server of a test's own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import pytest
import redis
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


async def read_body(receive: Any) -> bytes:
    """An ASGI request's whole body."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            return raw


def read_headers(scope: dict[str, Any]) -> dict[str, str]:
    """An ASGI request's headers, by lower-case name."""
    return {k.decode().lower(): v.decode() for k, v in scope["headers"]}


class Served:
    """A fake served on 127.0.0.1 by its ASGI ``_app``, from `start` to `stop`."""

    server: ServerThread | None = None

    def start(self) -> Self:
        self.server = ServerThread(self._app, lifespan="off").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


Request = TypeVar("Request")
Fault = TypeVar("Fault")


class ScriptedServer(Served, Generic[Request, Fault]):
    """A fake that records what it received, and answers the next requests with the faults a
    test scripted (in order; later ones meet ``no_fault``, answered normally).

    A dataclass fake calls ``ScriptedServer.__init__`` from its ``__post_init__``.
    """

    def __init__(self, no_fault: Fault) -> None:
        self.requests: list[Request] = []
        self._no_fault = no_fault
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()

    def script(self, *faults: Fault) -> None:
        """The next requests meet these faults, in order; later ones are answered normally."""
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self._cleared()

    def _cleared(self) -> None:
        """What else `reset` clears (called with the lock held)."""

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def next_fault(self) -> Fault:
        with self._lock:
            return self._faults.popleft() if self._faults else self._no_fault

    def received(self, request: Request) -> Fault:
        """Record ``request``; the fault it meets."""
        with self._lock:
            self.requests.append(request)
            return self._faults.popleft() if self._faults else self._no_fault


Fake = TypeVar("Fake", bound=Served)


def module_fixtures(name: str, make: Callable[[], Fake]) -> tuple[Any, Any]:
    """Two fixtures: ``_<name>``, the fake ``make`` builds, started once for the test module,
    and ``<name>``, that fake `reset` for each test that asks for it. A test module assigns
    both: ``_claude, claude = module_fixtures("claude", FakeAnthropic)``."""

    @pytest.fixture(scope="module", name=f"_{name}")
    def started() -> Iterator[Fake]:
        fake = make().start()
        yield fake
        fake.stop()

    @pytest.fixture(name=name)
    def fresh(request: pytest.FixtureRequest) -> Fake:
        fake: Any = request.getfixturevalue(f"_{name}")
        fake.reset()
        return fake  # type: ignore[no-any-return]

    return started, fresh


def redis_up(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class RedisProcess:
    """A redis-server of our own, that a test can kill, freeze and start again.

    The append-only file is fsync'd on every write, so what Redis acknowledged survives a
    SIGKILL and is there again after a restart, as with a production Redis with AOF.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not redis_up(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            self.kill()
