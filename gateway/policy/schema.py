"""The routing policy as typed, strict structures; `validate` does the cross-field checks.

The YAML an operator writes is turned into these models by ``policy.load``. Every model
forbids unknown keys (a misspelt key must never be silently ignored) and is frozen, so a
loaded policy can be shared by concurrent requests without copying.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
)

from gateway.policy.batch import BatchConfig
from gateway.policy.limits import Limits, MaxTokens, TenantLimits
from gateway.policy.models import (
    BUNDLED_EMBEDDERS,
    EngineOptions,
    ModelConfig,
    Price,
    Retries,
    Timeouts,
)
from gateway.policy.shadow import ShadowConfig
from gateway.policy.types import Category, Duration, Name, PerMillion, Seconds, Strict, one_or_many

__all__ = [
    "EngineOptions",
    "Limits",
    "MaxTokens",
    "ModelConfig",
    "Policy",
    "Price",
    "Retries",
    "TenantLimits",
    "Timeouts",
    "cheapest_model",
    "validate",
]


class Range(Strict):
    """Bounds on a number; every bound given must hold."""

    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        return (
            (self.gte is None or value >= self.gte)
            and (self.gt is None or value > self.gt)
            and (self.lte is None or value <= self.lte)
            and (self.lt is None or value < self.lt)
        )


class When(Strict):
    """Conditions of a routing rule; all given conditions must hold."""

    model: tuple[str, ...] | None = Field(
        default=None,
        description="Requested model names (aliases) this rule serves; without it a rule serves "
        "only model 'auto'. Names of policy models are always forced to that model instead.",
    )
    prompt_tokens: Range | None = Field(
        default=None, description="Estimated prompt tokens (UTF-8 bytes of the text / 4)."
    )
    tenant: tuple[Name, ...] | None = Field(default=None, description="Any of these tenants.")
    tags: dict[str, str] | None = Field(
        default=None, description="Every k=v given here is present in x-gateway-tags."
    )
    has_tools: bool | None = None
    has_images: bool | None = None
    difficulty: Range | None = Field(
        default=None,
        description="The classifier's difficulty in [0, 1] (probability that the small model "
        "falls short of the large one). Never matches a request the classifier did not score.",
    )
    category: Annotated[tuple[Category, ...], BeforeValidator(one_or_many)] | None = Field(
        default=None, description="Any of these classifier categories (one name or a list)."
    )
    batch: bool | None = Field(
        default=None,
        description="true: only lines of a batch (POST /v1/batches); false: only live requests.",
    )

    @property
    def needs_classifier(self) -> bool:
        return self.difficulty is not None or self.category is not None


class Split(Strict):
    """An A/B split: a share of the rule's traffic goes to another model."""

    to: Name
    share: float = Field(gt=0, lt=1, description="Share of matching requests, by request hash.")


class Route(Strict):
    name: Name
    when: When | None = Field(default=None, description="Omit for a rule that always matches.")
    to: Name
    split: Split | None = None
    sticky: bool = Field(
        default=True,
        description="false: this rule's choice holds even inside a sticky session.",
    )


class Routing(Strict):
    sticky_sessions: bool = Field(
        default=False,
        description="Keep the turns of a conversation (x-session-id, or the hash of its first "
        "messages) on the model that answered its first turn.",
    )
    session_ttl_s: Seconds = 3600.0
    max_sessions: int = Field(default=100_000, ge=1)


class Tenant(Strict):
    api_keys: tuple[Annotated[str, StringConstraints(min_length=16)], ...] = Field(
        min_length=1, description="Bearer keys of this tenant; use ${ENV_VAR} references."
    )
    monthly_budget_usd: PerMillion | None = Field(default=None, description="Per UTC month.")
    daily_budget_usd: PerMillion | None = Field(default=None, description="Per UTC day.")
    on_budget_exceeded: Literal["downgrade", "reject"] = Field(
        default="reject",
        description="downgrade: route to the cheapest priced model; reject: 429 until reset.",
    )
    limits: TenantLimits = TenantLimits()
    deny_fields: tuple[Annotated[str, StringConstraints(min_length=1)], ...] = Field(
        default=(),
        description="Request fields this tenant may not send (400 naming the field), e.g. "
        "service_tier or store, which are forwarded unchanged and can change the bill.",
    )


class Admin(Strict):
    api_keys: tuple[Annotated[str, StringConstraints(min_length=16)], ...] = Field(min_length=1)


class ExactCacheConfig(Strict):
    enabled: bool = True
    ttl: Duration = Field(default=86400.0, description="Seconds, or 30s / 15m / 24h / 7d.")
    max_entries: int = Field(default=100_000, ge=1, description="In-process store only.")
    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="In-process store only: bytes its keys and answers may hold in all; least "
        "recently used entries go first, and an answer larger than this is not stored.",
    )
    max_temperature: float = Field(
        default=1.0, ge=0, description="Requests above it (missing means 1) are not cached."
    )


class SemanticCacheConfig(Strict):
    """Answers to earlier requests that mean the same, in the same context (tenant, system
    prompt, earlier turns, tools, output-shaping parameters); see the README."""

    enabled: bool = Field(default=False, description="Loads the embedding model at start.")
    index: Literal["local", "pgvector"] = Field(
        default="local",
        description="local: each process searches its own copy of the entries (FAISS; shared "
        "through Redis when the gateway has one); pgvector: every replica searches one table in "
        "the ledger's PostgreSQL (GATEWAY_LEDGER_URL; `gateway db upgrade` creates it), so a "
        "replica holds no entries and is ready at once. Read when the cache opens.",
    )
    strictness: Literal["strict", "balanced"] = Field(
        default="strict",
        description="strict: the operating point that keeps wrong answers rarest (QQP precision "
        "0.85, recall 0.42); balanced: about twice the hits, and a wrong answer in four instead "
        "of one in seven (precision 0.77, recall 0.63). See bench/cache.",
    )
    scope: Literal["tenant", "user"] = Field(
        default="tenant",
        description="user: answers, exact and semantic, are shared only between requests of "
        "the same end user (safety_identifier, else user; Anthropic's metadata.user_id), and a "
        "request that names none uses neither cache.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest cosine similarity for a hit (the meaning guard must agree too); "
        "unset: the strictness's threshold (strict 0.85, balanced 0.75).",
    )
    ttl: Duration = Field(default=86400.0, description="Seconds, or 30s / 15m / 24h / 7d.")
    max_entries: int = Field(
        default=100_000, ge=1, description="Per process; least recently used entries go first."
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Per process: bytes the entries may hold in all (text, answer, vector, "
        "bookkeeping); least recently used entries go first.",
    )
    max_entry_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="An entry holding more (its question's opening and its answer) is not stored.",
    )
    max_temperature: float = Field(
        default=0.3, ge=0, description="Requests above it (missing means 1) are not cached."
    )
    approximate_after: int = Field(
        default=20_000,
        ge=1,
        description="Entries of one tenant and context past which search uses an HNSW index.",
    )


class CacheConfig(Strict):
    namespace: str = Field(default="v1", description="Change it to invalidate every entry.")
    exact: ExactCacheConfig = ExactCacheConfig()
    semantic: SemanticCacheConfig = SemanticCacheConfig()


class TelemetryPolicy(Strict):
    log_prompts: bool = Field(
        default=False,
        description="Put prompt and completion text in the request log lines (off: never).",
    )


class ResponsesConfig(Strict):
    """Stored responses of the Responses API (``store: true``, its default)."""

    ttl: Duration = Field(
        default=30 * 86400.0,
        description="How long a stored response can be read or continued "
        "(previous_response_id); seconds, or 30s / 15m / 24h / 30d.",
    )
    max_entries: int = Field(default=100_000, ge=1, description="In-process store only.")


class Policy(Strict):
    """The whole policy file."""

    version: Literal[1]
    models: dict[Name, ModelConfig] = Field(min_length=1)
    routes: tuple[Route, ...] = Field(min_length=1)
    baseline_model: Name | None = Field(
        default=None, description="What the traffic would have cost without the gateway."
    )
    tenants: dict[Name, Tenant] = Field(
        default_factory=dict, description="No tenants means open access (loopback only)."
    )
    admin: Admin | None = None
    limits: Limits = Limits()
    routing: Routing = Routing()
    cache: CacheConfig = CacheConfig()
    telemetry: TelemetryPolicy = TelemetryPolicy()
    responses: ResponsesConfig = ResponsesConfig()
    batch: BatchConfig = BatchConfig()
    shadow: ShadowConfig = ShadowConfig()


REQUIRED_FIELDS = frozenset({"model", "messages"})
"""Request fields no request can go without, so no tenant can be denied them."""

Problem = tuple[tuple[str | int, ...], str]
"""A cross-field problem: the key path it is about and a message."""


def validate(policy: Policy) -> list[Problem]:
    """Cross-field checks the types cannot express; returns every problem, not just the first."""
    problems: list[Problem] = []
    known = policy.models.keys()
    for name, model in policy.models.items():
        problems.extend(_provider_problems(name, model))
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in known:
                problems.append((("models", name, "fallbacks", i), f"unknown model {fallback!r}"))
            elif fallback == name:
                problems.append(
                    (("models", name, "fallbacks", i), "a model cannot fall back to itself")
                )
            elif policy.models[fallback].kind != model.kind:
                problems.append(
                    (("models", name, "fallbacks", i), f"{fallback!r} is not a {model.kind} model")
                )
            elif model.kind == "embeddings" and policy.models[fallback].model != model.model:
                problems.append(
                    (
                        ("models", name, "fallbacks", i),
                        f"{fallback!r} serves another model: its vectors are not comparable",
                    )
                )
        problems.extend(_embeddings_problems(name, model))
    seen_routes: set[str] = set()
    for i, route in enumerate(policy.routes):
        for path, target in _route_targets(route):
            if target not in known:
                problems.append((("routes", i, *path), f"unknown model {target!r}"))
            elif policy.models[target].kind != "chat":
                problems.append((("routes", i, *path), f"{target!r} is not a chat model"))
        for j, name in enumerate(route.when.model or () if route.when else ()):
            if name in known:
                problems.append(
                    (
                        ("routes", i, "when", "model", j),
                        f"{name!r} is a policy model: requests naming it are forced to it",
                    )
                )
        if route.name in seen_routes:
            problems.append((("routes", i, "name"), f"duplicate route name {route.name!r}"))
        seen_routes.add(route.name)
        for j, tenant_ref in enumerate(route.when.tenant or () if route.when else ()):
            if tenant_ref not in policy.tenants:
                problems.append(
                    (("routes", i, "when", "tenant", j), f"unknown tenant {tenant_ref!r}")
                )
    if policy.baseline_model is not None and policy.baseline_model not in known:
        problems.append((("baseline_model",), f"unknown model {policy.baseline_model!r}"))
    elif policy.baseline_model is not None and policy.models[policy.baseline_model].kind != "chat":
        problems.append((("baseline_model",), f"{policy.baseline_model!r} is not a chat model"))
    if "auto" in known:
        problems.append((("models", "auto"), "'auto' is reserved for routing by the policy"))
    problems.extend(_duplicate_keys(policy))
    problems.extend(_shadow_problems(policy))
    for tenant_name, tenant in policy.tenants.items():
        for i, denied in enumerate(tenant.deny_fields):
            if denied in REQUIRED_FIELDS:
                problems.append(
                    (("tenants", tenant_name, "deny_fields", i), f"{denied!r} is required")
                )
    if cheapest_model(policy) is None:
        for tenant_name, tenant in policy.tenants.items():
            if tenant.on_budget_exceeded == "downgrade":
                problems.append(
                    (
                        ("tenants", tenant_name, "on_budget_exceeded"),
                        "downgrade needs at least one model with a price",
                    )
                )
    return problems


def _embeddings_problems(name: str, model: ModelConfig) -> list[Problem]:
    """What an embeddings model cannot have, and what only an embeddings model can."""
    at = ("models", name)
    if model.kind == "chat":
        if model.max_dimensions is not None:
            return [((*at, "max_dimensions"), "only embeddings models take dimensions")]
        return []
    problems: list[Problem] = []
    if "max_tokens" in model.model_fields_set:
        problems.append(((*at, "max_tokens"), "an embeddings model writes no tokens"))
    if model.provider == "local_engine":
        if model.model.lower() not in BUNDLED_EMBEDDERS:
            problems.append(
                (
                    (*at, "model"),
                    "local_engine embeds with the bundled all-MiniLM-L6-v2 only; serve another "
                    "model with an OpenAI-compatible server (TEI, vLLM, Infinity)",
                )
            )
        if model.max_dimensions is not None:
            problems.append(
                ((*at, "max_dimensions"), "all-MiniLM-L6-v2 is not trained to shorten its vectors")
            )
        if "engine" in model.model_fields_set:
            problems.append(((*at, "engine"), "engine options are for local chat models"))
    return problems


_NEEDS: dict[str, tuple[str, ...]] = {
    "openai_compatible": ("base_url",),
    "anthropic": ("api_key",),
    "azure_openai": ("base_url",),
    "azure_ml": ("base_url",),
    "bedrock": ("aws",),
    "sagemaker": ("aws",),
    "vertex": ("gcp",),
}
"""What each provider cannot do without (its own sections' fields are checked by their types)."""
_EMBEDDERS = frozenset({"openai_compatible", "local_engine", "azure_openai"})
"""The providers that answer /v1/embeddings."""


def _provider_problems(name: str, model: ModelConfig) -> list[Problem]:
    problems: list[Problem] = [
        (("models", name, field), f"{model.provider} needs {field}")
        for field in _NEEDS.get(model.provider, ())
        if getattr(model, field) is None
    ]
    if (
        model.provider in ("azure_openai", "azure_ml")
        and (model.azure is None or model.azure.auth == "api_key")
        and model.api_key is None
    ):
        problems.append(
            (
                ("models", name, "api_key"),
                f"{model.provider} needs api_key (or azure: {{auth: entra_id}})",
            )
        )
    if model.kind == "embeddings" and model.provider not in _EMBEDDERS:
        problems.append((("models", name, "kind"), f"{model.provider} serves no embeddings"))
    return problems


def _route_targets(route: Route) -> list[tuple[tuple[str, ...], str]]:
    """The models a route sends requests to, with where the policy names each."""
    targets: list[tuple[tuple[str, ...], str]] = [(("to",), route.to)]
    if route.split is not None:
        targets.append((("split", "to"), route.split.to))
    return targets


def cheapest_model(policy: Policy) -> str | None:
    """The priced chat model with the lowest input plus output rate: where downgrades go."""
    priced = {
        n: m.price.input_rate + m.price.output_rate
        for n, m in policy.models.items()
        if m.price is not None and m.kind == "chat"
    }
    return min(priced, key=lambda n: priced[n]) if priced else None


def _shadow_problems(policy: Policy) -> list[Problem]:
    """Shadow comparisons need a chat model to compare against and one to judge."""
    shadow = policy.shadow
    problems: list[Problem] = []
    for field in ("to", "judge"):
        name = getattr(shadow, field)
        if name is None:
            if shadow.enabled:
                problems.append((("shadow", field), "needed when a rate is above 0"))
        elif name not in policy.models:
            problems.append((("shadow", field), f"unknown model {name!r}"))
        elif policy.models[name].kind != "chat":
            problems.append((("shadow", field), f"{name!r} is not a chat model"))
    problems.extend(
        (("shadow", "tenants", t), f"unknown tenant {t!r}")
        for t in shadow.tenants
        if t not in policy.tenants
    )
    return problems


def _duplicate_keys(policy: Policy) -> list[Problem]:
    """A key shared by two tenants would make billing and cache scoping ambiguous."""
    owner: dict[str, str] = {}
    problems: list[Problem] = []
    for name, tenant in policy.tenants.items():
        for i, key in enumerate(tenant.api_keys):
            if key in owner and owner[key] != name:
                problems.append(
                    (
                        ("tenants", name, "api_keys", i),
                        f"key already belongs to tenant {owner[key]!r}",
                    )
                )
            owner.setdefault(key, name)
    return problems
