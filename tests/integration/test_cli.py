"""The gateway command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import policy_text
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_policy_check_accepts_the_shipped_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_API_KEY": "sk-example-0000000000000000",
        "TEAM_A_KEY": "sk-team-a-000000000000000",
        "TEAM_B_KEY": "sk-team-b-000000000000000",
        "GATEWAY_ADMIN_KEY": "sk-admin-00000000000000000",
    }
    files = [str(p) for p in sorted((ROOT / "policies").rglob("*.yaml"))]
    assert len(files) >= 3
    result = gateway("policy", "check", *files, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_policy_check_reports_every_problem_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nmodels:\n  m:\n    provider: openai_compatible\n"
        "    base_url: ftp://x\n    model: x\n    tempreature: 3\n"
        "routes:\n  - {name: r, to: m}\n"
    )
    result = gateway("policy", "check", str(bad))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert f"{bad}:5:5: $.models.m.base_url: String should match pattern '^https?://'" in lines
    assert f"{bad}:7:5: $.models.m.tempreature: unknown key" in lines


def test_policy_check_warns_about_literal_keys(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(primary, backup))
    result = gateway("policy", "check", str(path))
    assert result.returncode == 0
    assert "$.models.main.api_key: a literal secret" in result.stderr
    assert "$.tenants.team-a.api_keys[0]: a literal secret" in result.stderr


def test_policy_schema_is_json_schema_of_the_policy() -> None:
    result = gateway("policy", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"version", "models", "routes"} <= set(schema["required"])
    assert "ModelConfig" in schema["$defs"]


def test_serve_refuses_open_access_on_a_public_host(
    tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(policy_text(primary, backup, tenants=False))
    result = gateway("serve", "--policy", str(path), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "defines no tenants" in result.stderr and "--allow-open" in result.stderr


def test_serve_refuses_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 2\n")
    result = gateway("serve", "--policy", str(path))
    assert result.returncode == 1
    assert f"{path}:1:1: $.version: Input should be 1" in result.stderr
