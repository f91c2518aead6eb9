"""Shared fixtures: fake upstreams and a gateway, each a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from litestar import Litestar

from gateway.app import create_app
from gateway.ledger.record import LedgerRecord
from gateway.settings import Settings
from gateway.telemetry import TelemetryConfig
from tests.fake_upstream import FakeUpstream
from tests.servers import RedisProcess, ServerThread

TENANT_KEY = "sk-test-tenant-a-0123456789"
OTHER_KEY = "sk-test-tenant-b-0123456789"
ADMIN_KEY = "sk-test-admin-0123456789abc"


@pytest.fixture(scope="session")
def _upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    primary, backup = FakeUpstream("primary").start(), FakeUpstream("backup").start()
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture
def primary(_upstreams: tuple[FakeUpstream, FakeUpstream]) -> FakeUpstream:
    _upstreams[0].reset()
    return _upstreams[0]


@pytest.fixture
def backup(_upstreams: tuple[FakeUpstream, FakeUpstream]) -> FakeUpstream:
    _upstreams[1].reset()
    return _upstreams[1]


def policy_text(
    primary: FakeUpstream,
    backup: FakeUpstream,
    *,
    tenants: bool = True,
    extra_routes: str = "",
    first_token_s: float = 5.0,
) -> str:
    """A policy with two models on the fake upstreams; ``main`` falls back to ``backup``."""
    tenant_block = (
        textwrap.dedent(f"""\
        tenants:
          team-a: {{api_keys: ["{TENANT_KEY}"]}}
          team-b: {{api_keys: ["{OTHER_KEY}"]}}
        admin: {{api_keys: ["{ADMIN_KEY}"]}}
        """)
        if tenants
        else ""
    )
    return (
        textwrap.dedent(f"""\
        version: 1
        models:
          main:
            provider: openai_compatible
            base_url: {primary.base_url}
            model: upstream-main
            api_key: sk-upstream-secret
            price: {{input_per_mtok: 2.50, cached_input_per_mtok: 1.25, output_per_mtok: 10}}
            fallbacks: [backup]
            timeouts: {{connect_s: 2, first_token_s: {first_token_s}, total_s: 20}}
            retries: {{max_attempts: 3, budget_s: 5, backoff_initial_s: 0.01, backoff_max_s: 0.05}}
          backup:
            provider: openai_compatible
            base_url: {backup.base_url}
            model: upstream-backup
            price: {{input_per_mtok: 0.10, output_per_mtok: 0.20}}
            timeouts: {{connect_s: 2, first_token_s: {first_token_s}, total_s: 20}}
            retries: {{max_attempts: 2, budget_s: 5, backoff_initial_s: 0.01, backoff_max_s: 0.05}}
        baseline_model: main
        routes:
        """)
        + textwrap.indent(extra_routes, "  ")
        + "  - {name: default, to: main}\n"
        + tenant_block
    )


@dataclass
class Gateway:
    server: ServerThread
    policy_path: Path
    app: Litestar
    data_dir: Path
    _clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    def records(self, count: int, timeout_s: float = 10.0) -> list[LedgerRecord]:
        """The ledger's records, once there are ``count`` of them (writes are batched)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.app.state.services.ledger.records()
            if len(found) >= count or time.monotonic() > deadline:
                return found  # type: ignore[no-any-return]
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str = TENANT_KEY) -> openai.OpenAI:
        """An SDK client with this key (made once, closed when the gateway stops)."""
        if key not in self._clients:
            self._clients[key] = openai.OpenAI(
                base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30
            )
        return self._clients[key]

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self.server.stop()


@pytest.fixture(scope="session")
def models_dir(request: pytest.FixtureRequest) -> Path:
    """One models folder (the embedder's ONNX export) for every gateway a run starts."""
    return Path(request.config.cache.mkdir("gateway-models"))


@pytest.fixture
def start_gateway(tmp_path: Path, models_dir: Path) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway on a policy text; stopped at the end of the test."""
    started: list[Gateway] = []

    def start(
        text: str,
        *,
        watch: bool = False,
        redis_url: str | None = None,
        telemetry: TelemetryConfig | None = None,
        host: str = "127.0.0.1",
        allow_open: bool = False,
        ledger_url: str | None = None,
    ) -> Gateway:
        """``host``, ``allow_open``: what ``serve`` was told (the server binds 127.0.0.1)."""
        path = tmp_path / f"policy-{len(started)}.yaml"
        path.write_text(text)
        settings = Settings(
            policy_path=path,
            data_dir=tmp_path / f"data-{len(started)}",
            watch_policy=watch,
            redis_url=redis_url,
            ledger_url=ledger_url,
            telemetry=telemetry or TelemetryConfig(),
            host=host,
            allow_open=allow_open,
        )
        settings.data_dir.mkdir(parents=True)
        (settings.data_dir / "models").symlink_to(models_dir, target_is_directory=True)
        app = create_app(settings)
        gateway = Gateway(ServerThread(app).start(), path, app, settings.data_dir)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> Gateway:
    return start_gateway(policy_text(primary, backup))


LOCAL_ENGINE_POLICY = """\
version: 1
models:
  local-small:
    provider: local_engine
    model: smollm2-135m-instruct
    engine: {{device: cpu, cache_dir: "{cache_dir}"}}
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.02}}
routes:
  - {{name: default, to: local-small}}
"""


@pytest.fixture
def local_gateway(start_gateway: Callable[..., Gateway], request: pytest.FixtureRequest) -> Gateway:
    """A gateway whose one model is the bundled SmolLM2, run in its own process (the tests that
    use it are marked ``model``); the converted model is shared with tests/engine."""
    cache_dir = request.config.cache.mkdir("local-engine-models")
    return start_gateway(LOCAL_ENGINE_POLICY.format(cache_dir=cache_dir))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (killable), stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    (tmp_path / "redis").mkdir()
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.stop()
