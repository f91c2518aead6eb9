"""Infrastructure settings from the environment; behaviour lives in the policy file.

Built by `Settings.from_env` in the app factory or the CLI, never at import time, so tests
pass their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.telemetry.config import TelemetryConfig

DEFAULT_POLICY = Path("policies/default.yaml")


@dataclass(frozen=True, slots=True)
class Settings:
    policy_path: Path = DEFAULT_POLICY
    """The policy file (`GATEWAY_POLICY`)."""
    data_dir: Path = Path(".gateway")
    """Embedded stores and model caches (`GATEWAY_DATA_DIR`)."""
    redis_url: str | None = None
    """Redis for the ledger, caches and counters (`GATEWAY_REDIS_URL`); unset: embedded stores."""
    ledger_url: str | None = None
    """PostgreSQL for the cost ledger (`GATEWAY_LEDGER_URL`, ``postgresql://...``), whose
    tables `gateway db upgrade` creates; unset: the ledger is in Redis, else in SQLite."""
    replica_id: str | None = None
    """This replica's name among those sharing a data volume (`GATEWAY_REPLICA_ID`): it names
    the ledger's spool files. Unset: the host name (``-{pid}`` is added if a live process has
    it already)."""
    admin_key: str | None = None
    """Admin key used when the policy names none (`GATEWAY_ADMIN_KEY`)."""
    watch_policy: bool = True
    """Reload the policy when its file changes."""
    host: str = "127.0.0.1"
    """The address the gateway listens on (``serve --host``): a policy without tenants is served
    only on a loopback address, unless `allow_open`."""
    allow_open: bool = False
    """Serve a policy without tenants on a non-loopback address (``serve --allow-open``)."""
    shutdown_grace_s: int = 30
    """On SIGTERM, how long requests in flight may run on before they are cancelled
    (`GATEWAY_SHUTDOWN_GRACE_S`, ``serve --shutdown-grace``); compose's stop_grace_period
    matches the default."""
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """Traces and metrics export, from the standard ``OTEL_*`` variables."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "policy_path": Path(env.get("GATEWAY_POLICY") or DEFAULT_POLICY),
            "data_dir": Path(env.get("GATEWAY_DATA_DIR") or ".gateway"),
            "admin_key": env.get("GATEWAY_ADMIN_KEY") or None,
            "redis_url": env.get("GATEWAY_REDIS_URL") or None,
            "ledger_url": env.get("GATEWAY_LEDGER_URL") or None,
            "replica_id": env.get("GATEWAY_REPLICA_ID") or None,
            "shutdown_grace_s": int(env.get("GATEWAY_SHUTDOWN_GRACE_S") or 30),
            "telemetry": TelemetryConfig.from_env(env),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
