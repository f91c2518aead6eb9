"""``gateway batch submit|status|results`` against a running gateway, with a tenant's key."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from tests.conftest import TENANT_KEY, Gateway
from tests.integration.batch.conftest import chat_line, jsonl


def test_submit_follow_status_and_results(batch_gateway: Gateway, tmp_path: Path) -> None:
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(jsonl([chat_line(f"c{i}", f"cli question {i}") for i in range(20)]))
    env = {"GATEWAY_URL": batch_gateway.url, "GATEWAY_API_KEY": TENANT_KEY}
    runner = CliRunner()

    submitted = runner.invoke(app, ["batch", "submit", str(lines)], env=env)
    assert submitted.exit_code == 0, submitted.output
    batch_id = submitted.stdout.strip().splitlines()[-1]
    assert batch_id.startswith("batch_")

    status = runner.invoke(app, ["batch", "status", batch_id], env=env)
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["status"] == "completed"
    assert shown["request_counts"] == {"total": 20, "completed": 20, "failed": 0}

    out = tmp_path / "out.jsonl"
    fetched = runner.invoke(app, ["batch", "results", batch_id, "--output", str(out)], env=env)
    assert fetched.exit_code == 0, fetched.output
    answers = {
        entry["custom_id"]: entry["response"]["body"]["choices"][0]["message"]["content"]
        for entry in map(json.loads, out.read_text().splitlines())
    }
    assert answers == {f"c{i}": f"primary says: cli question {i}" for i in range(20)}


def test_submit_refuses_a_file_of_no_known_endpoint(batch_gateway: Gateway, tmp_path: Path) -> None:
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(jsonl([{**chat_line("a", "x"), "url": "/v1/images"}]))
    env = {"GATEWAY_URL": batch_gateway.url, "GATEWAY_API_KEY": TENANT_KEY}
    result = CliRunner().invoke(app, ["batch", "submit", str(lines)], env=env)
    assert result.exit_code == 2
    assert "the endpoint must be one of" in result.output


def test_a_wrong_key_is_an_error_not_a_traceback(batch_gateway: Gateway, tmp_path: Path) -> None:
    env = {"GATEWAY_URL": batch_gateway.url, "GATEWAY_API_KEY": "sk-wrong"}
    result = CliRunner().invoke(app, ["batch", "status", "batch_x"], env=env)
    assert result.exit_code == 1
    assert "Incorrect API key" in result.output
