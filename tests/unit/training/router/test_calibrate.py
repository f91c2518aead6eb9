"""Threshold calibration: the math on hand-made prompts, and --write keeping the file's
comments and refusing an invalid result. The policies are written here by hand, so these tests
do not depend on the schema knowing ``when.difficulty`` yet."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.training.router.calibrate import (
    CalibrationError,
    Prompt,
    calibrate,
    candidate_thresholds,
    read_policy,
    write_threshold,
)
from gateway.training.router.cli import router_app

POLICY = textwrap.dedent("""\
    version: 1
    # the two models
    models:
      small:
        provider: openai_compatible
        base_url: http://127.0.0.1:1/v1
        model: s
        price: {input_per_mtok: 1, output_per_mtok: 1}   # cheap
      large:
        provider: openai_compatible
        base_url: http://127.0.0.1:2/v1
        model: l
        price: {input_per_mtok: 10, output_per_mtok: 10}
    baseline_model: large
    routes:
      - {name: hard-to-large, when: {difficulty: {gte: 0.5}}, to: large}   # tuned by calibrate
      - name: default
        to: small   # everything else
    """)

# ten prompts of difficulty 0.05, 0.15, ... 0.95, ten tokens each
PROMPTS = [Prompt(0.05 + i / 10, "other", 5, 5, 5) for i in range(10)]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_reads_strong_and_weak_models(policy: Path) -> None:
    _, routes = read_policy(policy)
    assert (routes.strong, routes.weak, routes.bound, routes.threshold) == (
        "large",
        "small",
        "gte",
        0.5,
    )
    assert routes.price("large") == (10.0, 10.0)


def test_target_share(policy: Path) -> None:
    _, routes = read_policy(policy)
    result = calibrate(routes, PROMPTS, target_strong_share=0.3)
    assert result.reachable
    assert result.chosen.threshold == pytest.approx(0.7)
    assert result.chosen.strong_share == pytest.approx(0.3)
    assert result.chosen.shares == {"small": pytest.approx(0.7), "large": pytest.approx(0.3)}
    assert result.current.strong_share == pytest.approx(0.5)


def test_target_cost(policy: Path) -> None:
    _, routes = read_policy(policy)
    # every prompt costs 1 USD/Mtok on small and 10 on large: cost = 1 + 9 * share
    result = calibrate(routes, PROMPTS, target_cost_per_mtok=3.7)
    assert result.chosen.strong_share == pytest.approx(0.3)
    assert result.chosen.cost_per_mtok == pytest.approx(3.7)
    assert result.chosen.baseline_cost_per_mtok == pytest.approx(10.0)


def test_unreachable_target_gives_the_closest(policy: Path) -> None:
    _, routes = read_policy(policy)
    result = calibrate(routes, PROMPTS, target_cost_per_mtok=0.5)
    assert not result.reachable
    assert result.chosen.strong_share == 0


def test_rules_before_the_threshold_take_precedence(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY.replace(
            "  - {name: hard-to-large",
            "  - {name: code-to-large, when: {category: [code]}, to: large}\n"
            "  - {name: vip, when: {tenant: [vip]}, to: large}\n"
            "  - {name: hard-to-large",
        )
    )
    _, routes = read_policy(path)
    assert routes.skipped_rules == ["vip"]
    prompts = [*PROMPTS[:8], Prompt(0.05, "code", 5, 5, 5), Prompt(0.05, "code", 5, 5, 5)]
    result = calibrate(routes, prompts, target_strong_share=0.4)
    # the two code prompts go to large whatever the threshold; two more can
    assert result.chosen.strong_share == pytest.approx(0.4)
    assert result.chosen.threshold == pytest.approx(0.6)


def test_candidate_thresholds_are_short_and_between_values() -> None:
    assert candidate_thresholds([0.2, 0.4, 0.4, 0.81]) == [0.0, 0.3, 0.6, 0.91]
    assert candidate_thresholds([0.123, 0.124]) == [0.0, 0.1235, 0.56]
    assert all(type(t) is float for t in candidate_thresholds([0.5]))


def test_no_difficulty_rule(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("when: {difficulty: {gte: 0.5}}", "when: {has_tools: true}"))
    with pytest.raises(CalibrationError, match="no rule tests the difficulty"):
        read_policy(path)


def test_write_keeps_comments(policy: Path) -> None:
    checked: list[Path] = []
    write_threshold(policy, 0.7, checked.append)
    text = policy.read_text()
    assert text == POLICY.replace("gte: 0.5", "gte: 0.7")
    assert "# tuned by calibrate" in text and "# everything else" in text
    assert checked and not checked[0].exists()  # validated as a sibling, then moved


def test_write_refuses_an_invalid_result(policy: Path) -> None:
    def reject(path: Path) -> None:
        raise ValueError("bad policy")

    with pytest.raises(ValueError, match="bad policy"):
        write_threshold(policy, 0.7, reject)
    assert policy.read_text() == POLICY
    assert list(policy.parent.iterdir()) == [policy]


def _scored(tmp_path: Path) -> Path:
    path = tmp_path / "scored.jsonl"
    rows = [
        {"id": i, "difficulty": p.difficulty, "category": "other", "input_tokens": 5}
        for i, p in enumerate(PROMPTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_writes_the_threshold(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.policy.load

    monkeypatch.setattr(gateway.policy.load, "load_policy", lambda path: None)
    args = ["calibrate", "--prompts", str(_scored(tmp_path)), "--policy", str(policy)]
    result = CliRunner().invoke(
        router_app, [*args, "--target-strong-share", "0.3", "--output-tokens", "5", "--write"]
    )
    assert result.exit_code == 0, result.output
    assert "calibrated" in result.output and "30.0%" in result.output
    assert "3.7000" in result.output  # USD per Mtok
    assert policy.read_text() == POLICY.replace("gte: 0.5", "gte: 0.7")


def test_cli_refuses_to_write_a_policy_that_does_not_load(policy: Path, tmp_path: Path) -> None:
    policy.write_text(POLICY + "colour: blue\n")  # an unknown key: the loader rejects it
    before = policy.read_text()
    args = ["calibrate", "--prompts", str(_scored(tmp_path)), "--policy", str(policy)]
    result = CliRunner().invoke(router_app, [*args, "--target-strong-share", "0.3", "--write"])
    assert result.exit_code == 1
    assert "unchanged" in result.output
    assert policy.read_text() == before


def test_cli_needs_exactly_one_target(policy: Path, tmp_path: Path) -> None:
    args = ["calibrate", "--prompts", str(_scored(tmp_path)), "--policy", str(policy)]
    assert CliRunner().invoke(router_app, args).exit_code == 2


def test_scored_rows_need_tokens_to_be_priced(policy: Path, tmp_path: Path) -> None:
    path = tmp_path / "scored.jsonl"
    path.write_text('{"id": 1, "difficulty": 0.5, "category": "chat"}\n')
    args = ["calibrate", "--prompts", str(path), "--policy", str(policy)]
    result = CliRunner().invoke(router_app, [*args, "--target-strong-share", "0.3"])
    assert result.exit_code == 1
    assert "neither text nor input_tokens" in result.output
