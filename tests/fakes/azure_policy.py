"""The policy the Azure tests start a gateway on: one Azure model, priced, falling back to the
fake OpenAI upstream ``backup``."""

from __future__ import annotations

import textwrap

from tests.conftest import ADMIN_KEY, TENANT_KEY
from tests.fake_upstream import FakeUpstream


def policy(backup: FakeUpstream, name: str, model: str, price: str) -> str:
    """``model``: the model's own lines (provider, base_url, ...); ``price`` its flow map."""
    return textwrap.dedent(f"""\
        version: 1
        models:
          {name}:
            {textwrap.indent(model, "            ").strip()}
            price: {price}
            fallbacks: [backup]
            timeouts: {{connect_s: 2, first_token_s: 5, total_s: 20}}
            retries: {{max_attempts: 2, budget_s: 5, backoff_initial_s: 0.01, backoff_max_s: 0.05}}
          backup:
            provider: openai_compatible
            base_url: {backup.base_url}
            model: upstream-backup
            price: {{input_per_mtok: 0.10, output_per_mtok: 0.20}}
        routes:
          - {{name: default, to: {name}}}
        tenants:
          team-a: {{api_keys: ["{TENANT_KEY}"]}}
        admin: {{api_keys: ["{ADMIN_KEY}"]}}
        """)
