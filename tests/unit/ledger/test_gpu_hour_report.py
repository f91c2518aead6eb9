"""``gateway report`` shows the models priced per GPU hour: configured rates beside charged ones."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.ledger import cli as ledger_cli
from tests.integration.ledger.test_http import fill
from tests.unit.ledger.helpers import rec

POLICY = """\
version: 1
models:
  hosted:
    provider: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: gpt-4o-mini
    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}
  local-gpu:
    provider: openai_compatible
    base_url: http://127.0.0.1:9/v1
    model: smollm2-135m-instruct
    price: {gpu_hour_usd: 3.6, input_tokens_per_s: 1000, output_tokens_per_s: 10}
routes:
  - {name: default, to: hosted}
"""


def test_the_table_report_lists_gpu_hour_prices_and_what_the_ledger_charged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    # 1,200 tokens for $0.0003 each: $0.25 per million, whatever the configured rates say.
    fill(tmp_path, [rec(now - 60 * i, model="local-gpu", cost="0.0003") for i in range(4)])
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_POLICY", str(tmp_path / "policy.yaml"))
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    main = typer.Typer()
    main.command("noop")(lambda: None)
    ledger_cli.register(main)

    result = CliRunner().invoke(main, ["report", "--since", "1d", "--by", "tenant"])
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("Models priced per GPU hour") :]
    (line,) = [s for s in table.splitlines() if "local-gpu" in s]
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    # $3.60/h at 1,000 and 10 tokens/s: $1 and $100 per million; the ledger charged $0.25.
    assert cells == ["local-gpu", "$3.60", "configured", "1,000", "10", "$1.00", "$100.00", "$0.25"]
    assert "hosted" not in table

    json_out = CliRunner().invoke(main, ["report", "--since", "1d", "--format", "json"])
    assert "Models priced per GPU hour" not in json_out.stdout
