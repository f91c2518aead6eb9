"""``gateway router score`` and ``eval`` on small files, with the real embedding model and the
committed head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.training.router.cli import router_app

pytestmark = pytest.mark.model


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"id": "a", "prompt": "hello!"},
        {"id": "b", "messages": [{"role": "user", "content": "Write a poem about rain."}]},
        {
            "id": 3,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Prove that there are infinitely many primes."},
            ],
        },
    ]
    out = tmp_path / "scored.jsonl"
    args = ["score", "--in", str(_write(tmp_path / "in.jsonl", rows)), "--out", str(out)]
    result = CliRunner().invoke(router_app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a", "b", 3]
    assert [r["category"] for r in scored] == ["chat", "creative", "math"]
    assert all(0 <= r["difficulty"] <= 1 for r in scored)


def test_eval(tmp_path: Path) -> None:
    base = {"subset": "x", "weak_model": "w", "strong_model": "s", "contaminated": False}
    cases = [  # benchmark, prompt, weak score, strong score
        ("mmlu", "What is 2 + 2?\nA. 3\nB. 4\nAnswer:", 1, 1),
        ("mmlu", "Which is a noble gas?\nA. Ne\nB. Na\nAnswer:", 0, 1),
        ("mmlu", "Capital of Peru?\nA. Lima\nB. Cusco\nAnswer:", 1, 0),
        ("gsm8k", "Tom has 3 apples and buys 4 more. How many?", 1, 1),
        ("gsm8k", "A train leaves at 3 pm at 60 mph...", 0, 1),
    ]
    rows: list[dict[str, object]] = [
        {**base, "id": f"t/{i}", "benchmark": b, "prompt": p, "weak_score": w, "strong_score": s}
        for i, (b, p, w, s) in enumerate(cases)
    ]
    data = _write(tmp_path / "labelled.jsonl", rows)
    args = ["eval", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    result = CliRunner().invoke(router_app, args)
    assert result.exit_code == 0, result.output
    for word in ("mmlu", "gsm8k", "all", "APGR", "CPT(50%)", "CPT(80%)", "random", "0.500"):
        assert word in result.output
