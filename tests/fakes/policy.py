"""The policy the provider tests start a gateway on: one model of the provider under test, tried
twice, then falling back to the fake OpenAI upstream ``backup``."""

from __future__ import annotations

import textwrap

from tests.conftest import ADMIN_KEY, TENANT_KEY
from tests.fake_upstream import FakeUpstream

_TRIES = (
    "fallbacks: [backup]\n"
    "timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}\n"
    "retries: {max_attempts: 2, budget_s: 5, backoff_initial_s: 0.01, backoff_max_s: 0.05}\n"
)


def policy_with_backup(name: str, entry: str, backup_url: str, *, baseline: bool = True) -> str:
    """A gateway policy whose route goes to the model ``name`` (``entry``: its own YAML keys),
    tried twice, then falling back to ``backup``, an OpenAI-compatible upstream at
    ``backup_url``; tenant ``team-a`` holds ``TENANT_KEY``. With ``baseline``, ``name`` is the
    ledger's baseline model."""
    own = textwrap.indent(textwrap.dedent(entry).strip() + "\n" + _TRIES, " " * 4)
    backup = textwrap.dedent(f"""\
        backup:
          provider: openai_compatible
          base_url: {backup_url}
          model: upstream-backup
          price: {{input_per_mtok: 0.10, output_per_mtok: 0.20}}
        """)
    baseline_model = f"baseline_model: {name}\n" if baseline else ""
    tail = textwrap.dedent(f"""\
        routes:
          - {{name: default, to: {name}}}
        tenants:
          team-a: {{api_keys: ["{TENANT_KEY}"]}}
        admin: {{api_keys: ["{ADMIN_KEY}"]}}
        """)
    head = f"version: 1\nmodels:\n  {name}:\n{own}"
    return head + textwrap.indent(backup, "  ") + baseline_model + tail


def policy(backup: FakeUpstream, name: str, model: str, price: str) -> str:
    """``model``: the model's own lines (provider, base_url, ...); ``price`` its flow map. No
    baseline model."""
    return policy_with_backup(name, f"{model}\nprice: {price}", backup.base_url, baseline=False)
