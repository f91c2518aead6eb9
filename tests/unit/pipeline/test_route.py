"""Rule matching, A/B split determinism and session stickiness."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.errors import BadRequest, ModelNotFound
from gateway.ml.classifier import Judgement
from gateway.pipeline.normalize import ChatRequest, chat_request
from gateway.pipeline.route import choose, request_unit
from gateway.policy.schema import Policy
from gateway.runtime.sessions import Sessions


def make_policy(routes: list[dict[str, Any]], **extra: Any) -> Policy:
    model = {"provider": "openai_compatible", "base_url": "http://x/v1", "model": "m"}
    return Policy.model_validate(
        {"version": 1, "models": {n: model for n in "abc"}, "routes": routes, **extra}
    )


def req(
    content: str = "x",
    *,
    model: str = "auto",
    tenant: str = "t",
    tags: str | None = None,
    session: str | None = None,
    extra: list[dict[str, str]] | None = None,
) -> ChatRequest:
    messages = [{"role": "user", "content": content}, *(extra or [])]
    body = msgspec.json.encode({"model": model, "messages": messages})
    return chat_request(
        body, request_id="req_1", tenant=tenant, tags_header=tags, session_id=session
    )


def route_of(
    policy: Policy, request: ChatRequest, sessions: Sessions | None = None
) -> tuple[str, str]:
    decision = choose(policy, request, sessions or Sessions(60, 100))
    return decision.route, decision.model


RULES = [
    {"name": "img", "when": {"has_images": True}, "to": "b"},
    {"name": "vip", "when": {"tenant": ["vip"], "tags": {"k": "v"}}, "to": "b"},
    {"name": "long", "when": {"prompt_tokens": {"gte": 100}}, "to": "c"},
    {"name": "alias", "when": {"model": ["gpt-4o", "auto-cheap"]}, "to": "c"},
    {"name": "rest", "to": "a"},
]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req(), ("rest", "a")),
        (req(tenant="vip", tags="k=v"), ("vip", "b")),
        (req(tenant="vip"), ("rest", "a")),
        (req(tags="k=v"), ("rest", "a")),
        (req("w " * 200), ("long", "c")),
        (req(model="gpt-4o"), ("alias", "c")),
        (req(model="b"), ("forced", "b")),
    ],
)
def test_first_matching_rule(request_: ChatRequest, expected: tuple[str, str]) -> None:
    assert route_of(make_policy(RULES), request_) == expected


def test_unknown_model_and_no_match() -> None:
    with pytest.raises(ModelNotFound):
        route_of(make_policy(RULES), req(model="zzz"))
    with pytest.raises(BadRequest):
        route_of(make_policy([{"name": "only-vip", "when": {"tenant": ["vip"]}, "to": "a"}]), req())


def test_split_is_deterministic_and_near_its_share() -> None:
    policy = make_policy([{"name": "ab", "to": "a", "split": {"to": "b", "share": 0.25}}])
    requests = [req(f"question {i}") for i in range(2000)]
    first = [route_of(policy, r)[1] for r in requests]
    assert first == [route_of(policy, r)[1] for r in requests]
    share = first.count("b") / len(first)
    assert 0.22 < share < 0.28
    assert all(0 <= request_unit(r) < 1 for r in requests)
    assert {route_of(policy, r)[0] for r in requests} == {"ab"}


STICKY = [
    {"name": "tools", "when": {"has_tools": True}, "to": "c", "sticky": False},
    {"name": "ab", "to": "a", "split": {"to": "b", "share": 0.5}},
]


def test_sticky_sessions_keep_the_first_turns_model() -> None:
    policy = make_policy(STICKY, routing={"sticky_sessions": True})
    sessions = Sessions(60, 100)
    first = req("hello", session="s1")
    decision = choose(policy, first, sessions)
    assert decision.session is not None
    sessions.remember(decision.session, "b")  # say the fallback b answered
    for i in range(20):  # later turns of s1 would split either way, but stay on b
        later = req(f"turn {i}", session="s1")
        assert route_of(policy, later, sessions) == ("sticky", "b")
    assert route_of(policy, req("turn 0", session="other"), sessions)[0] == "ab"


def test_sessions_without_an_id_are_named_by_their_opening() -> None:
    policy = make_policy(STICKY, routing={"sticky_sessions": True})
    sessions = Sessions(60, 100)
    decision = choose(policy, req("opening"), sessions)
    sessions.remember(decision.session or "", "c")
    follow_up = req(
        "opening",
        extra=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "and now?"}],
    )
    assert route_of(policy, follow_up, sessions) == ("sticky", "c")
    assert route_of(policy, req("opening", tenant="other"), sessions)[0] == "ab"


def test_a_non_sticky_rule_overrides_the_session() -> None:
    policy = make_policy(STICKY, routing={"sticky_sessions": True})
    sessions = Sessions(60, 100)
    sessions.remember(choose(policy, req(session="s"), sessions).session or "", "a")
    body = msgspec.json.encode(
        {
            "model": "auto",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function"}],
        }
    )
    with_tools = chat_request(body, request_id="r", tenant="t", tags_header=None, session_id="s")
    assert route_of(policy, with_tools, sessions) == ("tools", "c")


def test_stickiness_is_off_by_default() -> None:
    decision = choose(make_policy(STICKY), req(session="s"), Sessions(60, 100))
    assert decision.session is None


def test_sessions_remember_only_the_first_model() -> None:
    sessions = Sessions(60, 100)
    sessions.remember("k", "a")
    sessions.remember("k", "b")
    assert sessions.model_of("k") == "a"


JUDGED = [
    {"name": "hard", "when": {"difficulty": {"gte": 0.6}}, "to": "b"},
    {"name": "code", "when": {"category": "code"}, "to": "c"},
    {
        "name": "mid-math",
        "when": {"difficulty": {"gt": 0.3, "lt": 0.6}, "category": ["math"]},
        "to": "c",
    },
    {"name": "rest", "to": "a"},
]


@pytest.mark.parametrize(
    ("judgement", "expected"),
    [
        (Judgement(0.6, "chat"), "hard"),  # bounds are inclusive where they say so
        (Judgement(0.59, "code"), "code"),
        (Judgement(0.4, "math"), "mid-math"),
        (Judgement(0.3, "math"), "rest"),  # gt excludes the bound
        (Judgement(0.2, "chat"), "rest"),
        (None, "rest"),  # without a judgement, difficulty and category rules never match
    ],
)
def test_difficulty_and_category_rules(judgement: Judgement | None, expected: str) -> None:
    decision = choose(make_policy(JUDGED), req(), Sessions(60, 100), judgement)
    assert decision.route == expected


def test_a_category_name_is_short_for_a_list_and_unknown_ones_are_refused() -> None:
    policy = make_policy(JUDGED)
    assert policy.routes[1].when is not None and policy.routes[1].when.category == ("code",)
    with pytest.raises(ValueError, match="category"):
        make_policy([{"name": "x", "when": {"category": "poetry"}, "to": "a"}])
