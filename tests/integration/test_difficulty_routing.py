"""Routing by the classifier through the running gateway, with the real embedding model and the
committed head: a hard and an easy prompt take different routes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from gateway.ml.classifier import Classifier, features_of
from gateway.ml.embedder import Embedder
from gateway.telemetry import TelemetryConfig
from gateway.training.router.cli import router_app
from tests.conftest import Gateway, policy_text
from tests.fake_upstream import FakeUpstream
from tests.integration.telemetry.receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.model

EASY = "What is the capital of France?"
HARD = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
    "farmers' market?"
)
CODE = "Write a Python function that merges overlapping intervals."


@pytest.fixture(scope="module")
def scores(models_dir: Path) -> dict[str, float]:
    """The head's difficulty for each prompt, computed outside the gateway."""
    embedder = Embedder.load(cache_dir=models_dir)
    classifier = Classifier.load()
    texts = [EASY, HARD]
    vectors = embedder.embed_sync(texts)
    return {
        text: classifier.classify(
            vector, features_of([{"role": "user", "content": text}])
        ).difficulty
        for text, vector in zip(texts, vectors, strict=True)
    }


def ask(gw: Gateway, text: str, model: str = "auto", temperature: float = 1) -> httpx.Response:
    raw = gw.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=temperature
    )
    return raw.http_response  # type: ignore[no-any-return]


def test_a_hard_and_an_easy_prompt_take_different_routes(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    scores: dict[str, float],
) -> None:
    assert scores[HARD] > scores[EASY] + 0.02, scores  # the head separates them at all
    threshold = round((scores[HARD] + scores[EASY]) / 2, 4)
    gateway = start_gateway(
        policy_text(
            primary,
            backup,
            extra_routes=(
                f"- {{name: hard-to-main, when: {{difficulty: {{gte: {threshold}}}}}, to: main}}\n"
                "- {name: code-to-main, when: {category: code}, to: main}\n"
                "- {name: easy-to-backup, to: backup}\n"
            ),
        )
    )
    hard, easy, code = ask(gateway, HARD), ask(gateway, EASY), ask(gateway, CODE)
    assert (hard.headers["x-gateway-route"], hard.headers["x-gateway-model"]) == (
        "hard-to-main",
        "main",
    )
    assert (easy.headers["x-gateway-route"], easy.headers["x-gateway-model"]) == (
        "easy-to-backup",
        "backup",
    )
    assert code.headers["x-gateway-route"] == "code-to-main"
    assert float(hard.headers["x-gateway-difficulty"]) == pytest.approx(scores[HARD], abs=1e-3)
    assert float(easy.headers["x-gateway-difficulty"]) == pytest.approx(scores[EASY], abs=1e-3)
    records = {r.route: r for r in gateway.records(3)}
    assert records["hard-to-main"].difficulty == pytest.approx(scores[HARD], abs=1e-3)

    forced = ask(gateway, HARD, model="backup")  # a named model is not classified
    assert forced.headers["x-gateway-route"] == "forced"
    assert "x-gateway-difficulty" not in forced.headers

    # The routed requests in the ledger calibrate the policy: at most half to the strong model.
    # The code prompt goes there by its category whatever the bound, so the bound must rise
    # above the hard prompt's score.
    gateway.records(4)
    args = ["calibrate", "--from-ledger", "--target-strong-share", "0.5"]
    result = CliRunner().invoke(
        router_app,
        [*args, "--policy", str(gateway.policy_path), "--write"],
        env={"GATEWAY_DATA_DIR": str(gateway.data_dir), "GATEWAY_REDIS_URL": ""},
    )
    assert result.exit_code == 0, result.output
    assert "3 prompts" in result.output
    written = yaml.safe_load(gateway.policy_path.read_text())
    bound = written["routes"][0]["when"]["difficulty"]["gte"]
    assert scores[HARD] < bound


def test_the_gateway_traces_embed_semantic_cache_and_classify(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    scores: dict[str, float],
) -> None:
    with OtlpReceiver() as receiver:
        gateway = start_gateway(
            policy_text(
                primary,
                backup,
                extra_routes="- {name: hard, when: {difficulty: {gte: 0.99}}, to: backup}\n",
            )
            + "cache:\n  semantic: {enabled: true}\n",
            telemetry=TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False),
        )
        ask(gateway, HARD, temperature=0)  # cacheable: the semantic cache is asked
        gateway.app.state.telemetry.force_flush()
        spans = {s.name: s for s in receiver.wait_for_spans(8)}
    assert {
        "gateway.exact_cache",
        "gateway.embed",
        "gateway.semantic_cache",
        "gateway.classify",
        "gateway.route",
    } <= set(spans)
    root = spans["POST /v1/chat/completions"]
    assert all(
        spans[n].parent_span_id == root.span_id for n in ("gateway.embed", "gateway.classify")
    )
    assert attributes(spans["gateway.semantic_cache"]) == {"gateway.cache": "miss"}
    classify = attributes(spans["gateway.classify"])
    assert classify["gateway.difficulty"] == pytest.approx(scores[HARD], abs=1e-3)
    assert classify["gateway.category"] == "math"
    assert attributes(root)["gateway.difficulty"] == pytest.approx(scores[HARD], abs=1e-3)
