"""The live policy: compiled once per load, swapped atomically, reloaded on change.

A request reads `PolicyStore.current` once and uses that `Runtime` to the end, so a reload in
the middle of a request never mixes two policies. A new file that fails validation is refused:
the error is logged and the running policy stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import watchfiles

from gateway.policy.load import KeyPath, LoadedPolicy, PolicyError, Problem, load_policy
from gateway.policy.schema import ModelConfig, Policy
from gateway.providers import Provider
from gateway.providers.local_embedder import LocalEmbedder
from gateway.providers.local_engine import InProcessEngine
from gateway.providers.registry import REMOTE
from gateway.runtime.access import open_access_refused
from gateway.runtime.keys import KeyRing
from gateway.runtime.sessions import Sessions
from gateway.runtime.tokens import TokenCounter
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """A loaded policy with everything derived from it that requests need."""

    loaded: LoadedPolicy
    providers: Mapping[str, Provider]
    tenants: KeyRing
    admins: KeyRing
    sessions: Sessions
    routing_tags: frozenset[str]
    """Tag names that routing rules test: they choose the model, so they key the cache."""
    token_counters: Mapping[str, TokenCounter]
    """The tokenizers of the models that name one, by model."""
    classifies: bool = False
    """Some rule tests the classifier's difficulty or category."""
    loaded_at: float = field(default_factory=time.time)
    models_body: bytes = b""

    @property
    def policy(self) -> Policy:
        return self.loaded.policy


def _models_body(loaded: LoadedPolicy, created: int) -> bytes:
    ids = ["auto", *loaded.policy.models]
    return msgspec.json.encode(
        {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": created, "owned_by": "gateway"} for i in ids
            ],
        }
    )


def _admin_key_problem(policy: Policy, env_key: str | None) -> tuple[KeyPath, str] | None:
    """What is wrong with the admin keys in force, if anything: an admin key that is also a
    tenant's key (that tenant would be an admin), or a ``GATEWAY_ADMIN_KEY`` (used when the
    policy names no admin key) shorter than the 16 characters a policy key needs."""
    tenant_keys = {key for tenant in policy.tenants.values() for key in tenant.api_keys}
    if policy.admin is not None and policy.admin.api_keys:
        for i, key in enumerate(policy.admin.api_keys):
            if key in tenant_keys:
                return ("admin", "api_keys", i), "the admin key is also a tenant's key"
        return None
    if env_key is None:
        return None
    if len(env_key) < 16:
        return (), "GATEWAY_ADMIN_KEY is shorter than 16 characters"
    if env_key in tenant_keys:
        return (), "GATEWAY_ADMIN_KEY is also a tenant's key"
    return None


class PolicyStore:
    """Owns the current `Runtime` and the provider pools it uses."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[str, Provider] = {}
        self._retired: list[tuple[float, Provider]] = []
        self._current: Runtime | None = None
        self._sessions: Sessions | None = None
        self._counters: dict[str, TokenCounter] = {}
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Runtime:
        if self._current is None:
            raise RuntimeError("the policy store has not been started")
        return self._current

    async def start(self) -> Runtime:
        """Load the policy for start-up; raises `PolicyError`, since there is no old one to keep."""
        self._current = await self._compile(self._servable(load_policy(self._settings.policy_path)))
        for warning in self._current.loaded.warnings:
            log.warning("policy: %s", warning)
        return self._current

    async def reload(self) -> Runtime:
        """Load the file again; on `PolicyError` the running policy stays and the error rises."""
        async with self._lock:
            try:
                loaded = self._servable(
                    await asyncio.to_thread(load_policy, self._settings.policy_path)
                )
            except PolicyError as exc:
                log.error(
                    "policy reload refused, keeping version %s:\n%s",
                    self.current.loaded.digest,
                    exc,
                )
                raise
            self._current = await self._compile(loaded)
            await self._retire_unused()
            log.info("policy reloaded: %s (version %s)", loaded.path, loaded.digest)
            return self._current

    def _servable(self, loaded: LoadedPolicy) -> LoadedPolicy:
        """``loaded``, unless serving it would open the gateway to anyone (`PolicyError`)."""
        refused = open_access_refused(loaded.policy.tenants, self._settings)
        if refused is not None:
            raise PolicyError([Problem(str(loaded.path), 1, 1, ("tenants",), refused)])
        weak = _admin_key_problem(loaded.policy, self._settings.admin_key)
        if weak is not None:
            raise PolicyError([Problem(str(loaded.path), 1, 1, *weak)])
        return loaded

    async def watch(self) -> None:
        """Reload when the file changes.

        This watches the file's folder, not the file: editors replace a file rather than write
        it, and a Kubernetes ConfigMap volume swaps a ``..data`` link in that folder, so the
        file named by the policy path keeps its name while what it leads to changes. Any
        change in the folder is checked against the file's identity (`_identity`), so other
        files coming and going there reload nothing.
        """
        path = self._settings.policy_path.absolute()
        seen = _identity(path)
        async for _ in watchfiles.awatch(path.parent, debounce=200, recursive=False):
            now = _identity(path)
            if now != seen:
                seen = now
                with contextlib.suppress(PolicyError):
                    await self.reload()

    async def aclose(self) -> None:
        for provider in [*self._pools.values(), *(p for _, p in self._retired)]:
            await provider.aclose()
        self._pools.clear()
        self._retired.clear()

    async def _compile(self, loaded: LoadedPolicy) -> Runtime:
        policy = loaded.policy
        providers = {name: await self._provider(config) for name, config in policy.models.items()}
        admin_keys = list(policy.admin.api_keys) if policy.admin else []
        if not admin_keys and self._settings.admin_key:
            admin_keys = [self._settings.admin_key]
        return Runtime(
            loaded=loaded,
            providers=providers,
            tenants=KeyRing({name: t.api_keys for name, t in policy.tenants.items()}),
            admins=KeyRing({"admin": admin_keys}),
            token_counters=await self._token_counters(policy),
            routing_tags=frozenset(
                k for r in policy.routes if r.when and r.when.tags for k in r.when.tags
            ),
            sessions=self._sessions_for(policy.routing.session_ttl_s, policy.routing.max_sessions),
            classifies=any(r.when is not None and r.when.needs_classifier for r in policy.routes),
            models_body=_models_body(loaded, int(time.time())),
        )

    async def _token_counters(self, policy: Policy) -> dict[str, TokenCounter]:
        """Loaded once per tokenizer (a reload reuses them), in a thread: it reads files. A
        local_engine chat model that names none counts with its engine's model."""
        counters = {}
        for name, model in policy.models.items():
            tokenizer = model.tokenizer
            if tokenizer is None and model.provider == "local_engine" and model.kind == "chat":
                tokenizer = await asyncio.to_thread(_engine_model_dir, model, self._settings)
            if tokenizer is not None:
                if tokenizer not in self._counters:
                    self._counters[tokenizer] = await asyncio.to_thread(TokenCounter, tokenizer)
                counters[name] = self._counters[tokenizer]
        return counters

    def _sessions_for(self, ttl_s: float, max_sessions: int) -> Sessions:
        """Sessions survive a reload unless their limits changed."""
        sessions = self._sessions
        if sessions is None or (sessions.ttl_s, sessions.max_sessions) != (ttl_s, max_sessions):
            sessions = self._sessions = Sessions(ttl_s, max_sessions)
        return sessions

    async def _provider(self, config: ModelConfig) -> Provider:
        """The provider for this exact configuration; an unchanged model keeps its warm pool
        (or its loaded local model) across reloads. ``local_engine`` is the bundled engine
        for a chat model, the bundled embedder for an embeddings model."""
        key = config.model_dump_json()
        if key not in self._pools:
            if config.provider == "local_engine" and config.kind == "embeddings":
                models = self._settings.data_dir / "models"
                self._pools[key] = await LocalEmbedder.start(config, models)
            elif config.provider == "local_engine":
                cache_dir = config.engine.cache_dir or self._settings.data_dir / "models"
                self._pools[key] = await InProcessEngine.start(config, Path(cache_dir))
            else:
                self._pools[key] = REMOTE[config.provider](config)
        return self._pools[key]

    async def _retire_unused(self) -> None:
        """Set aside pools the new policy dropped; close them once no request can still use them.

        A request holds the `Runtime` it started with, so a dropped pool stays open for the
        longest a request on it may take (its total timeout, summed over retries).
        """
        now = time.monotonic()
        keep = {c.model_dump_json() for c in self.current.policy.models.values()}
        for key in [k for k in self._pools if k not in keep]:
            provider = self._pools.pop(key)
            config = ModelConfig.model_validate_json(key)
            grace = config.timeouts.total_s * config.retries.max_attempts + config.retries.budget_s
            self._retired.append((now + grace, provider))
        due = [p for when, p in self._retired if when <= now]
        self._retired = [(when, p) for when, p in self._retired if when > now]
        for provider in due:
            await provider.aclose()


def _engine_model_dir(config: ModelConfig, settings: Settings) -> str:
    """Where the bundled engine loads ``config``'s model from (converted once, at its start)."""
    from local_engine import models

    cache_dir = config.engine.cache_dir or settings.data_dir / "models"
    return models.local_path(models.resolve(config.model), Path(cache_dir))


def _identity(path: Path) -> tuple[str, int, int, int] | None:
    """What the policy path leads to now (the file at the end of its links, its inode, size
    and modification time), or None when it leads nowhere (mid-swap)."""
    try:
        target = path.resolve(strict=True)
        stat = target.stat()
    except OSError:
        return None
    return str(target), stat.st_ino, stat.st_size, stat.st_mtime_ns
