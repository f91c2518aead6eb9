"""The policy's limits: tenants' rate limits, the server's gate, max_tokens, denied fields;
strictly validated like the rest of the file."""

from __future__ import annotations

from pathlib import Path

from tests.unit.policy.test_load import GOOD, load, problems

TENANT = '  team-a: {api_keys: ["${TEAM_KEY}"], %s}\n'
ENV = {"LARGE_KEY": "sk-from-the-environment", "TEAM_KEY": "sk-team-a-0123456789abcdef"}


def with_tenant(extra: str) -> str:
    return GOOD + "tenants:\n" + TENANT % extra


def test_limits_load(tmp_path: Path) -> None:
    text = (
        with_tenant(
            "limits: {requests_per_minute: 60, tokens_per_minute: 40000, "
            "max_concurrent_requests: 4}, deny_fields: [service_tier, store]"
        )
        + "limits: {max_concurrent_requests: 64, max_queued: 128, queue_timeout_s: 5}\n"
    ).replace("model: tiny", "model: tiny\n    max_tokens: {default: 256, ceiling: 4096}")
    policy = load(tmp_path, text, ENV).policy
    tenant = policy.tenants["team-a"]
    assert tenant.limits.requests_per_minute == 60
    assert tenant.limits.tokens_per_minute == 40000
    assert tenant.limits.max_concurrent_requests == 4
    assert tenant.deny_fields == ("service_tier", "store")
    assert (policy.limits.max_concurrent_requests, policy.limits.max_queued) == (64, 128)
    rule = policy.models["small"].max_tokens
    assert (rule.default, rule.ceiling, rule.above_ceiling) == (256, 4096, "reject")


def test_limits_are_checked_strictly(tmp_path: Path) -> None:
    text = with_tenant("limits: {requests_per_minut: 60, tokens_per_minute: 0}").replace(
        "model: tiny", "model: tiny\n    max_tokens: {default: 512, ceiling: 256}"
    )
    found = problems(tmp_path, text, ENV)
    assert any("$.tenants.team-a.limits.requests_per_minut: unknown key" in p for p in found)
    assert any(
        "$.tenants.team-a.limits.tokens_per_minute: Input should be greater than or equal to 1" in p
        for p in found
    )
    assert any(
        "$.models.small.max_tokens" in p and "default (512) is above ceiling (256)" in p
        for p in found
    )


def test_required_fields_cannot_be_denied(tmp_path: Path) -> None:
    found = problems(tmp_path, with_tenant("deny_fields: [store, messages]"), ENV)
    assert [p.split(": ", 1)[1] for p in found] == [
        "$.tenants.team-a.deny_fields[1]: 'messages' is required"
    ]
