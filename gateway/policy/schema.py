"""The routing policy as typed, strict structures; `validate` does the cross-field checks.

The YAML an operator writes is turned into these models by ``policy.load``. Every model
forbids unknown keys (a misspelt key must never be silently ignored) and is frozen, so a
loaded policy can be shared by concurrent requests without copying.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
PerMillion = Annotated[Decimal, Field(ge=0, description="USD per million tokens")]
Seconds = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(Strict):
    """Prices in USD per million tokens, kept as exact decimals."""

    input_per_mtok: PerMillion
    output_per_mtok: PerMillion
    cached_input_per_mtok: PerMillion | None = Field(
        default=None, description="Price of prompt tokens the provider served from its cache."
    )


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


class ModelConfig(Strict):
    """A model the gateway can send requests to."""

    provider: Literal["openai_compatible"] = Field(
        description="openai_compatible speaks the OpenAI Chat Completions API: OpenAI, vLLM, TGI, "
        "SGLang, Ollama, TensorRT-LLM and Triton front ends, the bundled local-engine."
    )
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://")] = Field(
        description="The API root, e.g. https://api.openai.com/v1"
    )
    model: str = Field(min_length=1, description="The model name the provider expects.")
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


class Admin(Strict):
    api_keys: tuple[Annotated[str, StringConstraints(min_length=16)], ...] = Field(min_length=1)


class Limits(Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Else 413.")


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


Problem = tuple[tuple[str | int, ...], str]
"""A cross-field problem: the key path it is about and a message."""


def validate(policy: Policy) -> list[Problem]:
    """Cross-field checks the types cannot express; returns every problem, not just the first."""
    problems: list[Problem] = []
    known = policy.models.keys()
    for name, model in policy.models.items():
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
        for j, tenant in enumerate(route.when.tenant or () if route.when else ()):
            if tenant not in policy.tenants:
                problems.append((("routes", i, "when", "tenant", j), f"unknown tenant {tenant!r}"))
    if policy.baseline_model is not None and policy.baseline_model not in known:
        problems.append((("baseline_model",), f"unknown model {policy.baseline_model!r}"))
    if "auto" in known:
        problems.append((("models", "auto"), "'auto' is reserved for routing by the policy"))
    problems.extend(_duplicate_keys(policy))
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
