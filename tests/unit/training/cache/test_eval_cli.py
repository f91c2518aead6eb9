"""``gateway cache eval``: pair formats, the sweep, and --target-precision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

from gateway.training.cache import cli, evaluate

ROWS = [
    ("How do I cook risotto?", "How do I make risotto?", 1),
    ("What is the capital of France?", "What's the capital of France?", 1),
    ("Flights from Paris to London", "Flights from London to Paris", 0),
    ("Best phone under 10k", "Best phone under 15k", 0),
    ("How to learn Python?", "How to bake bread?", 0),
]


def fake_embed(texts: list[str], *_: object) -> npt.NDArray[np.float32]:
    """Close vectors for texts whose first words start alike, far ones otherwise."""
    out = []
    for text in texts:
        key = text.lower()[:3]
        base = np.random.default_rng(abs(hash(key)) % 2**32).standard_normal(16)
        noise = np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(16)
        row = base + 0.05 * noise
        out.append(row / np.linalg.norm(row))
    return np.asarray(out, dtype=np.float32)


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text_a": a, "text_b": b, "label": y}) for a, b, y in ROWS)
    )
    return path


def test_eval_reports_the_whole_decision(pairs_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_embed_texts", fake_embed)
    result = CliRunner().invoke(
        cli.app, ["eval", "--pairs", str(pairs_file), "--thresholds", "0.5,0.9",
                  "--target-precision", "0.99"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps to the terminal width
    assert "threshold and guard" in output
    # The guard removes both close negatives: precision 1.0 at recall 1.0.
    assert "lowest threshold reaching precision 0.99" in output
    assert "recall 1.000" in output


def test_without_the_guard_the_close_negatives_hit(
    pairs_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_embed_texts", fake_embed)
    result = CliRunner().invoke(
        cli.app, ["eval", "--pairs", str(pairs_file), "--no-guard", "--thresholds", "0.5",
                  "--target-precision", "0.99"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no threshold reaches precision 0.99" in " ".join(result.output.split())


def test_paraphrase_format_builds_negatives(tmp_path: Path) -> None:
    path = tmp_path / "para.jsonl"
    path.write_text(
        "\n".join(json.dumps({"id": i, "origin": f"origin {i}", "similar": f"similar {i}"})
                  for i in range(10))
    )  # fmt: skip
    pairs = evaluate.load_pairs(path)
    assert sum(p.label for p in pairs) == 10 and len(pairs) == 20
    assert all(p.stored != f"origin {p.query.split()[1]}" for p in pairs if not p.label)


def test_split_is_deterministic_and_disjoint() -> None:
    pairs = [evaluate.Pair(str(i), str(i), True) for i in range(11)]
    dev, test = evaluate.split(pairs, "dev"), evaluate.split(pairs, "test")
    assert len(dev) + len(test) == 11 and not {p.stored for p in dev} & {p.stored for p in test}
    assert evaluate.split(pairs, "dev") == dev


def test_sweep_counts() -> None:
    labels = np.array([True, True, False, False])
    scores = np.array([0.95, 0.85, 0.9, 0.5], dtype=np.float32)
    accepted = np.array([True, True, False, True])
    (at_08,) = evaluate.sweep(labels, scores, accepted, [0.8])
    assert (at_08.hits, at_08.true_hits, at_08.precision, at_08.recall) == (2, 2, 1.0, 1.0)
