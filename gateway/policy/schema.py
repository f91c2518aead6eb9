"""The routing policy as typed, strict structures; `validate` does the cross-field checks.

The YAML an operator writes is turned into these models by ``policy.load``. Every model
forbids unknown keys (a misspelt key must never be silently ignored) and is frozen, so a
loaded policy can be shared by concurrent requests without copying.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
PerMillion = Annotated[Decimal, Field(ge=0, description="USD per million tokens")]
Seconds = Annotated[float, Field(gt=0)]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """``90``, ``"90s"``, ``"15m"``, ``"24h"`` or ``"7d"`` as seconds."""
    if isinstance(value, str) and value[-1:] in _UNITS and value[:-1].strip():
        try:
            return float(value[:-1]) * _UNITS[value[-1]]
        except ValueError:
            return value
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Category = Literal["code", "math", "reasoning", "creative", "chat", "other"]
"""The classifier's categories (``gateway.ml.classifier.CATEGORIES``)."""


def _one_or_many(value: object) -> object:
    """``category: code`` is short for ``category: [code]``."""
    return (value,) if isinstance(value, str) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(Strict):
    """USD per million tokens, as exact decimals; or a GPU's hourly price and its throughput.

    With ``gpu_hour_usd`` the per-million rates are derived:
    ``rate = gpu_hour_usd * 1_000_000 / (3600 * tokens_per_s)``, separately for input (prefill,
    ``input_tokens_per_s``) and output (decode, ``output_tokens_per_s``). Take the throughputs
    from the engine's /metrics or from bench/engine at your usual concurrency.
    """

    input_per_mtok: PerMillion | None = None
    output_per_mtok: PerMillion | None = None
    cached_input_per_mtok: PerMillion | None = Field(
        default=None, description="Price of prompt tokens the provider served from its cache."
    )
    gpu_hour_usd: PerMillion | None = Field(default=None, description="USD per GPU hour.")
    input_tokens_per_s: Annotated[Decimal, Field(gt=0)] | None = None
    output_tokens_per_s: Annotated[Decimal, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Price:
        per_token = self.input_per_mtok is not None and self.output_per_mtok is not None
        per_hour = None not in (
            self.gpu_hour_usd,
            self.input_tokens_per_s,
            self.output_tokens_per_s,
        )
        if per_token == per_hour:
            raise ValueError(
                "give either input_per_mtok and output_per_mtok, or gpu_hour_usd "
                "with input_tokens_per_s and output_tokens_per_s"
            )
        return self

    def _per_mtok(self, tokens_per_s: Decimal | None) -> Decimal:
        assert self.gpu_hour_usd is not None and tokens_per_s is not None
        return self.gpu_hour_usd * 1_000_000 / (3600 * tokens_per_s)

    @property
    def input_rate(self) -> Decimal:
        if self.input_per_mtok is not None:
            return self.input_per_mtok
        return self._per_mtok(self.input_tokens_per_s)

    @property
    def output_rate(self) -> Decimal:
        if self.output_per_mtok is not None:
            return self.output_per_mtok
        return self._per_mtok(self.output_tokens_per_s)

    @property
    def cached_input_rate(self) -> Decimal:
        if self.cached_input_per_mtok is not None:
            return self.cached_input_per_mtok
        return self.input_rate


class Timeouts(Strict):
    """Separate limits, because a slow first token and a long answer are different failures."""

    connect_s: Seconds = Field(default=5.0, description="To open a connection.")
    first_token_s: Seconds = Field(
        default=60.0,
        description="From sending the request to the response head or first streamed chunk; "
        "also the longest pause allowed between chunks.",
    )
    total_s: Seconds = Field(default=600.0, description="For one whole attempt.")


class Retries(Strict):
    """Retries of one model on connection errors, timeouts, 429 and 5xx, before its fallbacks."""

    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts, the first included.")
    budget_s: Seconds = Field(
        default=30.0, description="No new attempt on this model starts after this many seconds."
    )
    backoff_initial_s: Seconds = 0.2
    backoff_max_s: Seconds = 5.0


class EngineOptions(Strict):
    """How ``provider: local_engine`` runs its model (see ``local-engine serve --help``)."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    max_batch_tokens: int | None = Field(default=None, ge=1)
    max_queue: int = Field(default=256, ge=0, description="Waiting requests before 503.")
    cache_dir: str | None = Field(
        default=None,
        description="Where converted models are kept (default: $GATEWAY_DATA_DIR/models).",
    )


class ModelConfig(Strict):
    """A model the gateway can send requests to."""

    provider: Literal["openai_compatible", "local_engine"] = Field(
        description="openai_compatible speaks the OpenAI Chat Completions API: OpenAI, vLLM, TGI, "
        "SGLang, Ollama, TensorRT-LLM and Triton front ends, the bundled local-engine server. "
        "local_engine runs the bundled engine inside the gateway's own process."
    )
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://")] | None = Field(
        default=None, description="The API root, e.g. https://api.openai.com/v1"
    )
    model: str = Field(
        min_length=1,
        description="The model name the provider expects; for local_engine a Hugging Face id, "
        "a local path, or smollm2-135m-instruct (bundled, offline).",
    )
    engine: EngineOptions = EngineOptions()
    tokenizer: str | None = Field(
        default=None,
        description="A Hugging Face tokenizer id or local directory, to count tokens exactly "
        "when the provider sends no usage (else they are estimated and marked so).",
    )
    api_key: str | None = Field(default=None, description="Use ${ENV_VAR}, never a literal key.")
    price: Price | None = None
    fallbacks: tuple[Name, ...] = Field(default=(), description="Tried in order when this fails.")
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()
    max_connections: int = Field(default=256, ge=1, description="Pool size towards this provider.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")


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
    category: Annotated[tuple[Category, ...], BeforeValidator(_one_or_many)] | None = Field(
        default=None, description="Any of these classifier categories (one name or a list)."
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


class Admin(Strict):
    api_keys: tuple[Annotated[str, StringConstraints(min_length=16)], ...] = Field(min_length=1)


class Limits(Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Else 413.")


class ExactCacheConfig(Strict):
    enabled: bool = True
    ttl: Duration = Field(default=86400.0, description="Seconds, or 30s / 15m / 24h / 7d.")
    max_entries: int = Field(default=100_000, ge=1, description="In-process store only.")
    max_temperature: float = Field(
        default=1.0, ge=0, description="Requests above it (missing means 1) are not cached."
    )


class SemanticCacheConfig(Strict):
    """Answers to earlier requests that mean the same, in the same context (tenant, system
    prompt, earlier turns, tools, output-shaping parameters); see the README."""

    enabled: bool = Field(default=False, description="Loads the embedding model at start.")
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest cosine similarity for a hit (the meaning guard must agree too); "
        "unset: the default measured in bench/cache.",
    )
    ttl: Duration = Field(default=86400.0, description="Seconds, or 30s / 15m / 24h / 7d.")
    max_entries: int = Field(
        default=100_000, ge=1, description="Per process; least recently used entries go first."
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


Problem = tuple[tuple[str | int, ...], str]
"""A cross-field problem: the key path it is about and a message."""


def validate(policy: Policy) -> list[Problem]:
    """Cross-field checks the types cannot express; returns every problem, not just the first."""
    problems: list[Problem] = []
    known = policy.models.keys()
    for name, model in policy.models.items():
        if model.provider == "openai_compatible" and model.base_url is None:
            problems.append((("models", name), "openai_compatible needs a base_url"))
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in known:
                problems.append((("models", name, "fallbacks", i), f"unknown model {fallback!r}"))
            elif fallback == name:
                problems.append(
                    (("models", name, "fallbacks", i), "a model cannot fall back to itself")
                )
    seen_routes: set[str] = set()
    for i, route in enumerate(policy.routes):
        if route.to not in known:
            problems.append((("routes", i, "to"), f"unknown model {route.to!r}"))
        if route.split is not None and route.split.to not in known:
            problems.append((("routes", i, "split", "to"), f"unknown model {route.split.to!r}"))
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
    if "auto" in known:
        problems.append((("models", "auto"), "'auto' is reserved for routing by the policy"))
    problems.extend(_duplicate_keys(policy))
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


def cheapest_model(policy: Policy) -> str | None:
    """The priced model with the lowest input plus output rate: where downgrades go."""
    priced = {
        n: m.price.input_rate + m.price.output_rate
        for n, m in policy.models.items()
        if m.price is not None
    }
    return min(priced, key=lambda n: priced[n]) if priced else None


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
