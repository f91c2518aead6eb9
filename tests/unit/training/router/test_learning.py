"""Learning from traffic, piece by piece: chat rows and their tier means, soft labels in the
fit, the labels store (SQLite and the real Redis), the shadow judge's rubric and grades, and
labelled requests as training and evaluation rows."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import redis

from gateway.labels_store import (
    Labelled,
    LabelStore,
    RedisLabels,
    Sample,
    SQLiteLabels,
    Verdict,
)
from gateway.ml.head import GROUPS, groups_of
from gateway.ml.terms import PROBLEM_FEATURES, problem_features
from gateway.pipeline.shadow import RUBRIC, judge_body, parse_grades, sampled, small_first
from gateway.policy.load import PolicyError, load_policy
from gateway.training.router import traffic
from gateway.training.router.data import (
    CHAT,
    STRONG_TIER,
    WEAK_TIER,
    LabelledRow,
    load_labelled,
    split,
)
from gateway.training.router.train import _soft, fit, logistic_fit

REDIS = "redis://127.0.0.1:6379/0"
SIGNATURE = {"model": "fake", "max_seq_length": 8, "quantized": False, "dim": 16}


def _chat_line(i: int, weak_wins: int, strong_wins: int) -> str:
    results = {m: {"win_vs_baseline": float(k < weak_wins)} for k, m in enumerate(WEAK_TIER)}
    results |= {m: {"win_vs_baseline": float(k < strong_wins)} for k, m in enumerate(STRONG_TIER)}
    results["some-other-model"] = {"win_vs_baseline": 1.0}
    row = {"id": f"alpaca_eval/{i}", "instruction": f"Tell me about {i}", "dataset": "oasst"}
    return json.dumps(row | {"results": results})


def test_a_chat_row_scores_each_tier_by_its_mean_verdict(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(_chat_line(0, 2, 5) + "\n" + _chat_line(1, 8, 4) + "\n")
    rows = load_labelled(path)
    assert (rows[0].benchmark, rows[0].subset, rows[0].prompt) == (
        CHAT,
        "oasst",
        "Tell me about 0",
    )
    assert (rows[0].weak_score, rows[0].strong_score) == (2 / 8, 1.0)
    assert (rows[1].weak_score, rows[1].strong_score) == (1.0, 4 / 5)
    assert rows[0].needs_strong and not rows[1].needs_strong


def test_a_chat_row_without_a_tier_verdict_is_refused(tmp_path: Path) -> None:
    row = {"id": "x", "instruction": "hi", "dataset": "oasst", "results": {"gpt4": None}}
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: no verdict"):
        load_labelled(tmp_path / "bad.jsonl")


def test_chat_rows_are_split_by_their_origin_and_id_hash(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(_chat_line(i, i % 9, 5) + "\n" for i in range(40)))
    train, held = split(load_labelled(path))
    assert len(held) == 10 and {r.id for r in train}.isdisjoint(r.id for r in held)
    again = split(list(reversed(load_labelled(path))))[1]  # the file's order does not matter
    assert {r.id for r in again} == {r.id for r in held}


def test_a_soft_target_is_two_weighted_rows_and_a_hard_one_is_unchanged() -> None:
    x = np.array([[1.0], [2.0], [3.0]])
    rows, labels, weights = _soft(x, np.array([0.0, 0.25, 1.0]), sparse=False)
    assert rows.tolist() == [[1.0], [2.0], [3.0], [2.0]]
    assert weights is not None and weights.tolist() == [1, 0.25, 1, 0.75]
    assert labels.tolist() == [0.0, 1.0, 1.0, 0.0]
    same = _soft(x, np.array([0.0, 1.0, 1.0]), sparse=False)
    assert same[0] is x and same[2] is None


def test_soft_targets_fit_the_share_they_state() -> None:
    """Two groups of identical rows whose targets are 0.2 and 0.8: the fitted probabilities
    come out near those shares (weak regularization), as a 0/1 fit on the expanded rows."""
    x = np.r_[np.zeros((50, 1)), np.ones((50, 1))]
    w, b = logistic_fit(x, np.r_[np.full(50, 0.2), np.full(50, 0.8)], l2=1e-3)
    p = 1 / (1 + np.exp(-(np.array([0.0, 1.0]) * w[0] + b)))
    assert np.allclose(p, [0.2, 0.8], atol=0.01)


def test_the_groups_follow_the_format_only() -> None:
    # log_chars, log_numbers, has_code, has_math, multiple_choice
    rows = np.array(
        [
            [3, np.log1p(0), 0, 0, 1],  # options: choice
            [3, np.log1p(2), 0, 0, 0],  # two numbers: problem
            [3, np.log1p(1), 0, 1, 0],  # one number and math: problem
            [3, np.log1p(1), 0, 0, 0],  # one number, no math: open
            [3, np.log1p(0), 0, 0, 0],  # open
        ],
        np.float32,
    )
    assert [GROUPS[g] for g in groups_of(rows)] == ["choice", "problem", "problem", "open", "open"]


def test_fit_takes_prompt_less_rows_with_their_dense_features() -> None:
    """Traffic rows have no text: their features come with them, and the head learns from them
    (here: the embedding's first axis says the small model fails)."""
    rng = np.random.default_rng(1)
    n = 200
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hard = vectors[:, 0] > 0
    rows = [
        LabelledRow(f"t{i}", traffic.TRAFFIC, "team", "", 0.0 if hard[i] else 1.0, 1.0)
        for i in range(n)
    ]
    dense = np.zeros((n, 21), np.float32)
    dense[:, 0] = 3.0
    head = fit(rows, vectors, SIGNATURE, dense=dense)
    scored = head.difficulty(vectors, dense[:, :5], None, dense=dense)
    ordered = (scored[hard][:, None] > scored[~hard][None, :]).mean()
    assert ordered > 0.95 and scored[hard].mean() > 0.5 > scored[~hard].mean()


@pytest.mark.parametrize("first", [True, False])
def test_judge_body_carries_the_rubric_the_request_and_both_answers(first: bool) -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]
    body = judge_body({"messages": messages}, "small says", "large says", first)
    assert body["messages"][0] == {"role": "system", "content": RUBRIC}
    text = body["messages"][1]["content"]
    a, b = ("small", "large") if first else ("large", "small")
    assert text.index("Q?") < text.index(f"Answer A ---\n{a} says") < text.index(f"B ---\n{b}")
    assert body["temperature"] == 0
    grades = parse_grades("A: 10\nB: 1", first)
    assert grades is not None and (grades.small, grades.large) == (
        (1.0, 0.0) if first else (0.0, 1.0)
    )


def test_the_small_answer_is_first_for_about_half_the_requests() -> None:
    firsts = [small_first(f"req-{i}") for i in range(4000)]
    assert 0.45 < sum(firsts) / len(firsts) < 0.55
    assert firsts == [small_first(f"req-{i}") for i in range(4000)]


@pytest.mark.parametrize(
    ("reply", "grades"),
    [
        ("A: 1\nB: 10", (0.0, 1.0)),
        ("A: 7\nB: 4", (6 / 9, 3 / 9)),
        ("  B = 10\n A=10 extra", (1.0, 1.0)),
        ("A: 11\nB: 3", None),
        ("A: 5", None),
        ("I prefer B", None),
    ],
)
def test_the_judges_grades_are_read_strictly(
    reply: str, grades: tuple[float, float] | None
) -> None:
    found = parse_grades(reply, small_first=True)
    assert (None if found is None else (found.small, found.large)) == grades


def test_sampling_is_by_the_request_id_at_the_rate() -> None:
    ids = [f"req-{i}" for i in range(4000)]
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]


def _sample(request_id: str, tenant: str = "team-a", at: float | None = None) -> Sample:
    return Sample(
        request_id=request_id,
        tenant=tenant,
        time=time.time() if at is None else at,
        model="small",
        difficulty=0.3,
        vector=np.arange(4, dtype=np.float32).tobytes(),
        dense=np.ones(3, np.float32).tobytes(),
    )


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabelStore]:
    prefix = f"test:labels:{uuid.uuid4()}:"
    if request.param == "sqlite":
        labels: LabelStore = SQLiteLabels(tmp_path / "labels.sqlite3")
    else:
        labels = RedisLabels(REDIS, prefix=prefix)
    yield labels
    await labels.aclose()
    if request.param == "redis":
        with redis.Redis.from_url(REDIS) as client:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)


async def test_a_store_keeps_samples_and_returns_only_labelled_ones(store: LabelStore) -> None:
    await store.keep(_sample("r1", at=100.0))
    await store.keep(_sample("r2", at=200.0))
    await store.keep(_sample("r3", at=300.0))
    assert await store.labelled() == []
    await store.judged(
        "r2", Verdict(large_model="large", judge="judge", small_score=0, large_score=1)
    )
    await store.judged("nope", Verdict(large_model="l", judge="j", small_score=0, large_score=1))
    assert await store.feedback("team-a", "r1", 0.5, "meh")
    found = await store.labelled()
    assert [f.sample.request_id for f in found] == ["r1", "r2"]
    assert (found[0].feedback, found[0].feedback_text, found[0].small_score) == (0.5, "meh", None)
    assert (found[1].small_score, found[1].large_score, found[1].judge) == (0.0, 1.0, "judge")
    assert found[1].vector.tolist() == [0, 1, 2, 3] and found[1].dense.tolist() == [1, 1, 1]
    assert [f.sample.request_id for f in await store.labelled(since=150.0)] == ["r2"]


async def test_a_tenant_rates_only_its_own_requests(store: LabelStore) -> None:
    await store.keep(_sample("mine", tenant="team-a"))
    assert not await store.feedback("team-b", "mine", 1.0, None)
    assert not await store.feedback("team-a", "unknown", 1.0, None)
    assert await store.labelled() == []
    assert await store.feedback("team-a", "mine", 1.0, None)


async def test_shadow_spend_adds_up_per_tenant_and_utc_day(store: LabelStore) -> None:
    day = 86400 * 20000 + 10.0
    await store.add_spend("team-a", day, Decimal("0.001"))
    await store.add_spend("team-a", day + 3600, Decimal("0.0025"))
    await store.add_spend("team-b", day, Decimal("1"))
    await store.add_spend("team-a", day + 86400, Decimal("7"))
    assert await store.spend("team-a", day + 60) == Decimal("0.0035")
    assert await store.spend("team-a", day - 86400) == 0


def _labelled(i: int, **labels: float) -> Labelled:
    return Labelled(sample=_sample(f"r{i}", at=float(i)), **labels)  # type: ignore[arg-type]


def test_traffic_rows_take_feedback_over_the_judge_and_a_large_model_that_satisfies() -> None:
    rows = traffic.rows_of(
        [
            _labelled(0, small_score=0.2, large_score=0.9),
            _labelled(1, feedback=0.0),
            _labelled(2, small_score=1.0, large_score=1.0, feedback=0.5),
        ]
    )
    assert [(r.weak_score, r.strong_score) for r in rows.rows] == [(0.2, 0.9), (0.0, 1.0), (0.5, 1)]
    assert rows.vectors.shape == (3, 4) and rows.routed.tolist() == [0.3, 0.3, 0.3]
    older, newest = traffic.split_by_time(rows, 0.34)
    assert [r.id for r in older.rows] == ["r0", "r1"] and [r.id for r in newest.rows] == ["r2"]


def test_quality_groups_the_small_models_judged_answers() -> None:
    labels = [
        _labelled(0, small_score=0.0, large_score=1.0),
        _labelled(1, small_score=1.0, large_score=1.0),
        _labelled(2, feedback=0.25),
    ]
    (row,) = traffic.quality(labels)
    assert (row.group, row.compared, row.small, row.large, row.as_good) == ("small", 2, 0.5, 1, 0.5)
    assert (row.feedback, row.feedback_mean) == (1, 0.25)


_SHADOW_POLICY = """\
version: 1
models:
  small: {provider: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: s}
  large: {provider: openai_compatible, base_url: "http://127.0.0.1:9/v1", model: l}
routes:
  - {name: default, to: small}
shadow: SHADOW
tenants:
  team-a: {api_keys: ["${KEY}"]}
"""


@pytest.mark.parametrize(
    ("shadow", "problem"),
    [
        ("{tenants: {team-a: 0.5}, to: large}", "$.shadow.judge: needed when a rate is above 0"),
        ("{tenants: {team-z: 0.5}, to: large, judge: large}", "$.shadow.tenants.team-z: unknown"),
        ("{tenants: {team-a: 1.5}, to: large, judge: large}", "$.shadow.tenants.team-a"),
    ],
)
def test_the_policy_check_names_a_bad_shadow_section(
    tmp_path: Path, shadow: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_SHADOW_POLICY.replace("SHADOW", shadow))
    with pytest.raises(PolicyError, match=re.escape(problem)):
        load_policy(path, {"KEY": "sk-a-key-of-twenty-chars"})


def test_a_tenants_rate_replaces_the_default_rate(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        _SHADOW_POLICY.replace(
            "SHADOW", "{rate: 0.1, tenants: {team-a: 0}, to: large, judge: large}"
        )
    )
    shadow = load_policy(path, {"KEY": "sk-a-key-of-twenty-chars"}).policy.shadow
    assert (shadow.rate_for("team-a"), shadow.rate_for("team-b"), shadow.enabled) == (0, 0.1, True)


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("Half of 1/2 is a quarter", {"fraction"}),
        ("the percentage, 5%", {"percent"}),
        ("a_percent 5percent", set()),
        ("It took two hours at 60 MPH, then km/h", {"time", "rate"}),
        ("5km/h xkm/h", set()),
        ("twice per day; if the rest is left", {"times", "each", "time", "if", "left"}),
        ("rates, iffy, timer", set()),
    ],
)
def test_keyword_facts_are_whole_words_in_any_case(text: str, facts: set[str]) -> None:
    names = ("fraction", "percent", "time", "times", "each", "rate", "left", "if")
    row = dict(zip(PROBLEM_FEATURES, problem_features(text).tolist(), strict=True))
    assert {n for n in names if row[n]} == facts


def test_number_words_are_counted() -> None:
    counted = problem_features("One, two... TWELVE dozen; none").tolist()
    row = dict(zip(PROBLEM_FEATURES, counted, strict=True))
    assert row["log_number_words"] == pytest.approx(np.log1p(4))
