"""Shutdown: requests in flight get a bounded grace (uvicorn's timeout_graceful_shutdown), set by
``GATEWAY_SHUTDOWN_GRACE_S`` or ``gateway serve --shutdown-grace``, 30 s by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from gateway import telemetry
from gateway.cli import app
from gateway.settings import Settings
from tests.conftest import policy_text
from tests.fake_upstream import FakeUpstream


def test_the_grace_comes_from_the_environment() -> None:
    assert Settings.from_env({}).shutdown_grace_s == 30
    assert Settings.from_env({"GATEWAY_SHUTDOWN_GRACE_S": "7"}).shutdown_grace_s == 7


@pytest.mark.parametrize(
    ("args", "env", "grace"),
    [([], {}, 30), (["--shutdown-grace", "5"], {"GATEWAY_SHUTDOWN_GRACE_S": "9"}, 5)],
    ids=["default", "option-over-env"],
)
def test_serve_hands_the_grace_to_uvicorn(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    primary: FakeUpstream,
    backup: FakeUpstream,
    args: list[str],
    env: dict[str, str],
    grace: int,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(primary, backup))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda _app, **options: seen.update(options))
    monkeypatch.setattr(telemetry, "configure_logging", lambda *_: None)
    monkeypatch.delenv("GATEWAY_SHUTDOWN_GRACE_S", raising=False)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["serve", "--policy", str(path), *args], env=env)
    assert result.exit_code == 0, result.output
    assert seen["timeout_graceful_shutdown"] == grace
