"""The router learns from the gateway's own traffic, end to end.

Fake models whose quality per prompt is known in advance (real HTTP servers on 127.0.0.1): the
small model answers every cooking question wrongly and every geography question right, the
judge grades by rule. The shipped head cannot tell the two apart (both are short chat, about
0.23), so the policy's difficulty rule sends both to the small model. After one round of shadow
traffic (every small-model answer compared with the large model's and judged in the
background) and ``gateway router train --from-ledger``, a gateway on the retrained head sends
new cooking questions to the large model and new geography questions to the small one, and
the held-out labels' APGR rises over the shipped head's.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli_app
from gateway.labels_store import Labelled
from gateway.ml.classifier import DEFAULT_HEAD, DEPLOYMENT_HEAD
from gateway.ml.head import Head
from gateway.settings import Settings
from gateway.training.router import metrics, traffic
from gateway.training.router.cli import router_app
from tests.conftest import OTHER_KEY, TENANT_KEY, Gateway
from tests.integration.routing.fakes import RuleModel, judge_model, large_model, small_model
from tests.servers import ServerThread

pytestmark = pytest.mark.model

_VERBS = ("boil", "roast", "grill", "bake", "steam", "fry", "poach", "braise")
_FOODS = ("potatoes", "carrots", "salmon", "chicken thighs", "broccoli", "eggs", "rice", "leeks")
_COUNTRIES = (
    "Peru", "Chile", "Kenya", "Norway", "Japan", "Egypt", "Canada", "Brazil", "Spain", "India",
    "Ghana", "Nepal", "Chad", "Cuba", "Fiji", "Laos", "Mali", "Oman", "Iran", "Iraq",
    "Italy", "Greece", "Poland", "Mexico", "Turkey", "Sweden", "Finland", "Vietnam",
    "Morocco", "Austria", "Belgium", "Denmark",
)  # fmt: skip
COOKING = [f"How long should I {v} {f} for dinner?" for v, f in itertools.product(_VERBS, _FOODS)]
GEOGRAPHY = [f"What is the capital city of {c}?" for c in _COUNTRIES] + [
    f"Which languages are spoken in {c}?" for c in _COUNTRIES
]
ROUND, NEW = 40, 16  # per topic: prompts of the shadow round, and new ones afterwards
THRESHOLD = 0.5


def _policy(small: RuleModel, large: RuleModel, judge: RuleModel) -> str:
    def model(name: str, m: RuleModel, price: str) -> str:
        return (
            f"  {name}:\n    provider: openai_compatible\n    base_url: {m.base_url}\n"
            f"    model: {name}-upstream\n    price: {{{price}}}\n"
        )

    return (
        "version: 1\nmodels:\n"
        + model("small", small, "input_per_mtok: 0.10, output_per_mtok: 0.20")
        + model("large", large, "input_per_mtok: 2.50, output_per_mtok: 10")
        + model("judge", judge, "input_per_mtok: 2.50, output_per_mtok: 10")
        + "baseline_model: large\nroutes:\n"
        + f"  - {{name: hard, when: {{difficulty: {{gte: {THRESHOLD}}}}}, to: large}}\n"
        + "  - {name: easy, to: small}\n"
        + "shadow: {rate: 0, tenants: {team-a: 1.0}, to: large, judge: judge, "
        + "daily_budget_usd: 1}\n"
        + f'tenants:\n  team-a: {{api_keys: ["{TENANT_KEY}"]}}\n'
        + f'  team-b: {{api_keys: ["{OTHER_KEY}"]}}\n'
    )


@pytest.fixture
def fakes() -> Iterator[tuple[RuleModel, RuleModel, RuleModel]]:
    with small_model(set(COOKING)) as small, large_model() as large, judge_model() as judge:
        yield small, large, judge


def _ask(client: openai.OpenAI, text: str) -> httpx.Response:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}]
    )
    return raw.http_response  # type: ignore[no-any-return]


def _labels(data_dir: Path, count: int, timeout_s: float = 60.0) -> list[Labelled]:
    """The labels store's labelled requests, once there are ``count`` (shadow work runs after
    the responses)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = traffic.load_labelled(Settings(data_dir=data_dir), 0.0)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _models(answers: list[httpx.Response]) -> list[str]:
    return [a.headers["x-gateway-model"] for a in answers]


def test_shadow_labels_and_retraining_send_the_small_models_failures_to_the_large_one(
    start_gateway: Callable[..., Gateway],
    fakes: tuple[RuleModel, RuleModel, RuleModel],
    tmp_path: Path,
) -> None:
    small, large, judge = fakes
    gateway = start_gateway(_policy(small, large, judge))
    client = gateway.client()
    asked = [p for pair in zip(COOKING[:ROUND], GEOGRAPHY[:ROUND], strict=True) for p in pair]
    answers = [_ask(client, p) for p in asked]
    # before: the shipped head sends both topics to the small model, whose cooking answers fail
    assert set(_models(answers)) == {"small"}
    assert sum(json.loads(a.content)["choices"][0]["message"]["content"] == "I am not sure; "
               "probably 42." for a in answers) == ROUND  # fmt: skip
    labels = _labels(gateway.data_dir, 2 * ROUND)
    assert len(labels) == 2 * ROUND
    grades = {(lab.small_score, lab.large_score) for lab in labels}
    assert grades == {(0.0, 8 / 9), (8 / 9, 8 / 9)}
    # the client's answers came from the small model alone; shadow calls went to the others
    assert len(small.received) == 2 * ROUND
    assert len(large.received) == len(judge.received) == 2 * ROUND
    positions = Counter(
        "A" if "Answer A ---\nI am not sure" in text else "B"
        for body in judge.received
        if "I am not sure" in (text := body["messages"][1]["content"])
    )
    assert positions["A"] and positions["B"]  # the small answer is shown first or second

    records = gateway.records(6 * ROUND)
    shadow = [r for r in records if r.shadow_of is not None]
    own = [r for r in records if r.shadow_of is None]
    assert len(own) == 2 * ROUND and {(r.route, r.model) for r in own} == {("easy", "small")}
    assert len(shadow) == 4 * ROUND
    assert {(r.route, r.model) for r in shadow} == {("shadow", "large"), ("shadow", "judge")}
    assert {r.shadow_of for r in shadow} == {r.request_id for r in own}
    assert all(r.baseline_cost_usd == 0 and r.cost_usd and r.cost_usd > 0 for r in shadow)
    assert all(r.request_id.startswith(f"{r.shadow_of}:shadow-") for r in shadow)

    gateway.stop()
    env = {"GATEWAY_DATA_DIR": str(gateway.data_dir)}
    report = CliRunner().invoke(cli_app, ["report", "--by", "route", "--format", "json"], env=env)
    assert report.exit_code == 0, report.output
    rows = {row["route"]: row for row in json.loads(report.output)["rows"]}
    assert rows["shadow"]["requests"] == 4 * ROUND
    assert Decimal(rows["shadow"]["baseline_cost_usd"]) == 0
    assert Decimal(rows["shadow"]["savings_usd"]) == -Decimal(rows["shadow"]["cost_usd"]) < 0
    assert rows["easy"]["requests"] == 2 * ROUND  # the shadow spend stands apart
    data = tmp_path / "shipped.jsonl"
    data.write_text(_choice_rows(60))
    args = "train --from-ledger --validation-fraction 0 --holdout 0.2 --no-progress --data"
    result = CliRunner().invoke(
        router_app, [*args.split(), str(data)], env={"GATEWAY_DATA_DIR": str(gateway.data_dir)}
    )
    assert result.exit_code == 0, result.output
    mine = gateway.data_dir / DEPLOYMENT_HEAD
    assert mine.exists() and "held-out labels from traffic" in result.output

    # on the newest labels, held out of training: the retrained head ranks as well as an oracle
    # that knows the grades (half need the large model: APGR 0.75), the shipped one no better
    # than chance allows
    _, newest = traffic.split_by_time(traffic.rows_of(labels), 0.2)
    weak, strong = (
        np.array([getattr(r, f) for r in newest.rows]) for f in ("weak_score", "strong_score")
    )
    oracle = metrics.report(strong - weak, weak, strong).apgr
    found = traffic.compare(newest, {"new": Head.load(mine), "shipped": Head.load(DEFAULT_HEAD)})
    new, shipped = found.reports["new"].apgr, found.reports["shipped"].apgr
    assert new == pytest.approx(oracle) and new > shipped + 0.1, found

    evaluated = CliRunner().invoke(
        router_app, ["eval", "--from-ledger"], env={"GATEWAY_DATA_DIR": str(gateway.data_dir)}
    )
    assert evaluated.exit_code == 0 and "shipped head" in evaluated.output, evaluated.output
    quality = CliRunner().invoke(
        router_app, ["quality", "--by", "tenant"], env={"GATEWAY_DATA_DIR": str(gateway.data_dir)}
    )
    assert quality.exit_code == 0 and "team-a" in quality.output, quality.output

    # a gateway on the same data dir loads the retrained head
    settings = Settings(policy_path=gateway.policy_path, data_dir=gateway.data_dir,
                        watch_policy=False)  # fmt: skip
    with (
        ServerThread(create_app(settings)) as server,
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=TENANT_KEY, max_retries=0) as again,
    ):
        cooking = [_ask(again, p) for p in COOKING[ROUND : ROUND + NEW]]
        geography = [_ask(again, p) for p in GEOGRAPHY[ROUND : ROUND + NEW]]
    assert _models(cooking) == ["large"] * NEW, _models(cooking)
    assert _models(geography) == ["small"] * NEW, _models(geography)


def _choice_rows(n: int) -> str:
    """Rows in the shipped data's format (multiple choice, like MMLU) to train beside."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        weak = float(rng.random() < 0.6)
        prompt = f"Question {i} about topic {i % 7}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        row = {"id": f"c{i}", "benchmark": "mmlu", "subset": "s", "prompt": prompt}
        lines.append(json.dumps(row | {"weak_score": weak, "strong_score": 1.0}))
    return "\n".join(lines) + "\n"


def test_feedback_rates_only_the_callers_own_kept_requests(
    start_gateway: Callable[..., Gateway], fakes: tuple[RuleModel, RuleModel, RuleModel]
) -> None:
    gateway = start_gateway(_policy(*fakes))
    answer = _ask(gateway.client(), GEOGRAPHY[0])
    request_id = answer.headers["x-gateway-request-id"]
    _labels(gateway.data_dir, 1)  # the sample is kept in the background

    def rate(body: object, key: str | None = TENANT_KEY) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{gateway.url}/v1/feedback", json=body, headers=headers)

    assert rate({"request_id": request_id, "score": 1}, key=None).status_code == 401
    other = rate({"request_id": request_id, "score": 0}, key=OTHER_KEY)
    assert other.status_code == 404 and other.json()["error"]["code"] == "request_not_found"
    for bad, param in (
        ({"request_id": request_id, "score": 2}, "score"),
        ({"request_id": request_id, "score": True}, "score"),
        ({"request_id": "", "score": 0.5}, "request_id"),
        ({"request_id": request_id, "score": 0.5, "text": 3}, "text"),
        ({"request_id": request_id, "score": 0.5, "extra": 1}, "extra"),
    ):
        refused = rate(bad)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, bad
    assert rate([1, 2]).status_code == 400
    assert rate({"request_id": "nope", "score": 0.5}).status_code == 404
    stored = rate({"request_id": request_id, "score": 0.25, "text": "too short"})
    assert stored.status_code == 200 and stored.json()["stored"] is True
    (label,) = [lab for lab in _labels(gateway.data_dir, 1) if lab.feedback is not None]
    assert (label.feedback, label.feedback_text) == (0.25, "too short")
    assert label.sample.tenant == "team-a" and label.sample.request_id == request_id


def test_shadow_work_stops_at_the_tenants_daily_budget(
    start_gateway: Callable[..., Gateway], fakes: tuple[RuleModel, RuleModel, RuleModel]
) -> None:
    small, large, judge = fakes
    text = _policy(small, large, judge).replace("daily_budget_usd: 1", "daily_budget_usd: 0.0001")
    gateway = start_gateway(text)
    for prompt in GEOGRAPHY[:6]:
        _ask(gateway.client(), prompt)
        time.sleep(0.3)  # one comparison at a time, so that each sees the spend before it
    records = gateway.records(6 + 2)
    spent = sum((r.cost_usd or Decimal(0) for r in records if r.shadow_of), Decimal(0))
    compared = {r.shadow_of for r in records if r.shadow_of}
    assert 1 <= len(compared) < 6 and spent >= Decimal("0.0001")
    assert len(small.received) == 6


def test_a_streamed_answer_is_compared_and_keep_features_lets_any_answer_be_rated(
    start_gateway: Callable[..., Gateway], fakes: tuple[RuleModel, RuleModel, RuleModel]
) -> None:
    small, large, judge = fakes
    text = _policy(small, large, judge).replace(
        "shadow: {rate: 0,", "shadow: {keep_features: true,"
    )
    gateway = start_gateway(text)
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": COOKING[0]}], stream=True
    ) as streamed:
        pieces = [line for line in streamed.iter_lines() if line.startswith("data: {")]
        sampled_id = streamed.headers["x-gateway-request-id"]
    assert pieces and "I am not sure" in "".join(pieces)
    (label,) = _labels(gateway.data_dir, 1)
    assert label.sample.request_id == sampled_id and (label.small_score, label.large_score) == (
        0.0,
        8 / 9,
    )
    other = _ask(gateway.client(OTHER_KEY), GEOGRAPHY[0])  # team-b: rate 0, features kept
    other_id = other.headers["x-gateway-request-id"]
    rated = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"request_id": other_id, "score": 1},
        headers={"authorization": f"Bearer {OTHER_KEY}"},
    )
    assert rated.status_code == 200, rated.text
    labels = _labels(gateway.data_dir, 2)
    assert {lab.sample.request_id for lab in labels} == {sampled_id, other_id}
    assert len(large.received) == len(judge.received) == 1  # team-b was not compared
