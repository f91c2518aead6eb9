"""Sticky sessions' keys: a fixed-size digest whatever the client sends."""

from __future__ import annotations

from gateway.runtime.sessions import Sessions, session_key

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_a_key_is_a_fixed_size_digest() -> None:
    keys = {
        session_key("t", "s" * 100_000, []),
        session_key("t", "s", []),
        session_key("u", "s", []),
        session_key("t", None, MESSAGES),
        session_key("t", None, [*MESSAGES, {"role": "assistant", "content": "x" * 100_000}]),
        session_key("u", None, MESSAGES),
    }
    assert {len(k) for k in keys} == {32}
    # Tenants, ids and openings are told apart; later turns keep their opening's key.
    assert len(keys) == 5


def test_an_id_and_an_opening_never_share_a_key() -> None:
    assert session_key("t", "hi", []) != session_key("t", None, [{"role": "user", "content": "hi"}])


def test_sessions_are_bounded() -> None:
    sessions = Sessions(ttl_s=60, max_sessions=10)
    for i in range(100):
        sessions.remember(session_key("t", f"s{i}", []), "m")
    assert len(sessions._models) == 10
