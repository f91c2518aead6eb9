"""``gateway report`` on the settings' ledger, and ``gateway replay`` through a running gateway."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.ledger import cli as ledger_cli
from tests.integration.ledger.app import ADMIN_KEY, make_app
from tests.integration.ledger.test_http import fill, history
from tests.servers import ServerThread


@pytest.fixture
def app() -> typer.Typer:
    main = typer.Typer()
    main.command("noop")(lambda: None)  # two commands, so typer keeps the subcommand names
    ledger_cli.register(main)
    return main


def test_report_reads_the_ledger_of_the_settings(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = history(time.time())
    fill(tmp_path, records)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    runner = CliRunner()

    result = runner.invoke(app, ["report", "--since", "30d", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["totals"]["requests"] == len(records)
    assert {row["model"] for row in body["rows"]} == {"small", "large", "local"}

    result = runner.invoke(
        app, ["report", "--since", "30d", "--by", "tenant", "--tenant", "team-b", "-f", "csv"]
    )
    assert result.exit_code == 0, result.output
    lines = list(csv.reader(io.StringIO(result.stdout)))
    assert lines[1][0] == "team-b" and lines[1][1] == "60"

    result = runner.invoke(app, ["report", "--since", "30d", "--by", "day,model"])
    assert result.exit_code == 0, result.output
    assert "TOTAL" in result.stdout and "large" in result.stdout

    result = runner.invoke(app, ["report", "--by", "colour"])
    assert result.exit_code == 2
    assert "cannot group by 'colour'" in result.output


def test_replay_sends_the_prompts_and_prints_the_report_of_that_run(
    app: typer.Typer, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"what is {i} plus {i}?"} for i in range(12)]
    rows += [{"prompt": "what is 1 plus 1?"}] * 4  # served from the cache
    long = "explain in detail how a transformer attends over a long document please"
    rows += [{"messages": [{"role": "user", "content": long}], "max_tokens": 50}] * 2
    prompts.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with ServerThread(make_app(tmp_path / "data")) as gateway:
        args = ["replay", "--prompts", str(prompts), "--url", gateway.url, "--concurrency", "4"]
        result = CliRunner().invoke(
            app, [*args, "--admin-key", ADMIN_KEY, "--format", "json", "--by", "cache"]
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        assert body["totals"]["requests"] == len(rows)
        caches = {row["cache"]: row["requests"] for row in body["rows"]}
        assert caches == {"miss": 13, "exact": 5}
        assert float(body["totals"]["cache_savings_usd"]) > 0
        assert float(body["totals"]["routing_savings_usd"]) > 0

        # a second run is reported on its own (its own tag), in a table
        result = CliRunner().invoke(app, [*args, "--admin-key", ADMIN_KEY])
        assert result.exit_code == 0, result.output
        assert "TOTAL" in result.stdout and "18" in result.stdout

        # without the admin key: a summary from the response headers
        result = CliRunner().invoke(app, args, env={"GATEWAY_ADMIN_KEY": ""})
        assert result.exit_code == 0, result.output
        assert "cache exact" in result.stdout


def test_replay_refuses_a_bad_prompts_file(app: typer.Typer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    result = CliRunner().invoke(
        app, ["replay", "--prompts", str(prompts), "--url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    flat = re.sub(r"[\s│]", "", result.output)  # the message is wrapped in a box
    assert "prompts.jsonl:2:needs'prompt'" in flat
