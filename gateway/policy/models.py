"""A policy's models: where each is served, what it costs, and how it is called.

Each entry of the policy's ``models`` is a `ModelConfig`: the provider that speaks to it, its
price (per million tokens, or per GPU hour with measured throughput), its timeouts, retries
and ordered fallbacks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from gateway.policy.batch import UpstreamBatch
from gateway.policy.limits import MaxTokens
from gateway.policy.types import Name, PerMillion, Seconds, Strict


class TierPrice(Strict):
    """A provider's price in one of its service tiers, USD per million tokens."""

    input_per_mtok: PerMillion
    output_per_mtok: PerMillion
    cached_input_per_mtok: PerMillion | None = None


UNTIERED = frozenset({"default", "auto"})
"""Service tiers that are the model's usual price (OpenAI answers ``default`` when asked for
``auto``, or for nothing)."""


class Price(Strict):
    """USD per million tokens, as exact decimals; or a GPU's hourly price and its throughput.

    With ``gpu_hour_usd`` the per-million rates are derived:
    ``rate = gpu_hour_usd * 1_000_000 / (3600 * tokens_per_s)``, separately for input (prefill,
    ``input_tokens_per_s``) and output (decode, ``output_tokens_per_s``). Take the throughputs
    from the engine's /metrics or from bench/engine at your usual concurrency, or set
    ``throughput: measured`` to price each request of a local engine at the prefill and
    decode tokens/s it measured over the last minute (`at_throughput`): the bundled one
    (``provider: local_engine``), or a ``local-engine serve`` behind ``openai_compatible``,
    read from its /metrics.
    """

    input_per_mtok: PerMillion | None = None
    output_per_mtok: PerMillion | None = None
    cached_input_per_mtok: PerMillion | None = Field(
        default=None, description="Price of prompt tokens the provider served from its cache."
    )
    cache_write_per_mtok: PerMillion | None = Field(
        default=None,
        description="Price of prompt tokens the provider wrote to its cache (Anthropic's "
        "cache_creation_input_tokens); unset: the input price.",
    )
    batch_discount: Annotated[Decimal, Field(ge=0, lt=1)] = Field(
        default=Decimal(0),
        description="Share taken off every rate for lines of a batch (0.5: half price, as "
        "hosted batch APIs charge).",
    )
    gpu_hour_usd: PerMillion | None = Field(default=None, description="USD per GPU hour.")
    input_tokens_per_s: Annotated[Decimal, Field(gt=0)] | None = None
    output_tokens_per_s: Annotated[Decimal, Field(gt=0)] | None = None
    throughput: Literal["configured", "measured"] = Field(
        default="configured",
        description="With gpu_hour_usd, 'measured': each request is priced at the prefill and "
        "decode tokens/s its local engine measured when the request ended (local_engine, or "
        "a local-engine serve behind openai_compatible, read from its /metrics every 15 s); "
        "the configured figures stand until it has measured any, and when models are compared.",
    )
    service_tiers: dict[Annotated[str, StringConstraints(min_length=1)], TierPrice] = Field(
        default_factory=dict,
        description="Prices by the service tier the provider's answer reports (flex, "
        "priority, ...); an answer in a tier not listed here is unpriced.",
    )

    def in_tier(self, tier: str | None) -> Price | None:
        """The price of an answer the provider served in ``tier``; None when that tier has no
        price here (never the usual price: a priority answer costs more, a flex one less)."""
        if tier is None or tier in UNTIERED:
            return self
        found = self.service_tiers.get(tier)
        if found is None:
            return None
        return Price(
            input_per_mtok=found.input_per_mtok,
            output_per_mtok=found.output_per_mtok,
            cached_input_per_mtok=found.cached_input_per_mtok,
        )

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
        if self.throughput == "measured" and not per_hour:
            raise ValueError("throughput: measured needs gpu_hour_usd")
        return self

    def at_throughput(
        self, input_tokens_per_s: float | None, output_tokens_per_s: float | None
    ) -> Price:
        """This price at measured throughputs, each rounded to a whole token per second (so
        the rate behind a ledger record is a short exact decimal: the cost is recomputed from
        the record's tokens and those two integers); a figure not measured yet keeps the
        configured one. Unchanged unless ``throughput`` is ``measured``."""
        if self.throughput != "measured":
            return self
        return self.model_copy(
            update={
                "input_tokens_per_s": _whole(input_tokens_per_s) or self.input_tokens_per_s,
                "output_tokens_per_s": _whole(output_tokens_per_s) or self.output_tokens_per_s,
            }
        )

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
    def cache_write_rate(self) -> Decimal:
        if self.cache_write_per_mtok is not None:
            return self.cache_write_per_mtok
        return self.input_rate

    @property
    def cached_input_rate(self) -> Decimal:
        if self.cached_input_per_mtok is not None:
            return self.cached_input_per_mtok
        return self.input_rate


def _whole(tokens_per_s: float | None) -> Decimal | None:
    """A measured rate as a whole number of tokens per second, at least 1; None if unmeasured."""
    if tokens_per_s is None or tokens_per_s <= 0:
        return None
    return Decimal(max(1, round(tokens_per_s)))


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
    quantization: Literal["none", "int8", "int8_dynamic", "int4"] = Field(
        default="none",
        description="Linear weights: int8 (weight-only), int8_dynamic (int8 activations too: "
        "faster on a CPU, less exact), int4 (GPU); see `local_engine.quantize`.",
    )
    speculation: Literal["prompt_lookup", "off"] = Field(
        default="prompt_lookup",
        description="Speculative decoding (prompt-lookup drafts; greedy answers are unchanged) "
        "for a request decoded alone while the batch is small.",
    )
    solo_max_batch: int = Field(
        default=1,
        ge=-1,
        description="A request is decoded alone, with speculation, while the batch holds at "
        "most this many others; -1: never.",
    )


BUNDLED_EMBEDDERS = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
"""Names (lower case) of the embedding model ``provider: local_engine`` runs in-process."""


Provider = Literal[
    "openai_compatible",
    "local_engine",
    "anthropic",
    "azure_openai",
    "bedrock",
    "vertex",
    "sagemaker",
    "azure_ml",
]


class AwsOptions(Strict):
    """Where a bedrock or sagemaker model runs and how requests are signed (SigV4).

    Without keys here, credentials come from the usual AWS chain (environment, shared files,
    instance or task role), as botocore finds them.
    """

    region: str = Field(min_length=1, description="e.g. us-east-1")
    access_key_id: str | None = Field(default=None, description="Use ${ENV_VAR}.")
    secret_access_key: str | None = Field(default=None, description="Use ${ENV_VAR}.")
    session_token: str | None = Field(default=None, description="Use ${ENV_VAR}.")
    profile: str | None = Field(default=None, description="A profile of the shared AWS files.")
    inference_component: str | None = Field(
        default=None, description="sagemaker: the endpoint's inference component, if any."
    )


class GcpOptions(Strict):
    """Where a vertex model runs and whose credentials call it (OAuth tokens from google-auth,
    refreshed before they expire)."""

    project: str = Field(min_length=1)
    location: str = Field(default="us-central1", min_length=1)
    credentials_file: str | None = Field(
        default=None,
        description="A service account key file; unset: application default credentials.",
    )


class AzureOptions(Strict):
    """An Azure OpenAI deployment, or an Azure ML endpoint's deployment; and their auth."""

    deployment: str | None = Field(
        default=None,
        description="azure_openai: the deployment (unset: the model's name); azure_ml: the "
        "endpoint's deployment, sent as azureml-model-deployment (unset: its traffic split).",
    )
    api_version: str | None = Field(
        default=None,
        description="azure_openai: e.g. 2024-10-21, for the deployment URL "
        "{base_url}/openai/deployments/{deployment}/...?api-version=; unset: the v1 API "
        "({base_url}/openai/v1/..., the deployment as the request's model).",
    )
    auth: Literal["api_key", "entra_id"] = Field(
        default="api_key",
        description="api_key: the model's api_key as the api-key header (azure_openai) or as a "
        "bearer key (azure_ml); entra_id: a Microsoft Entra ID token from azure-identity's "
        "default credential chain.",
    )


class ContainerOptions(Strict):
    """The request and answer shapes of the container behind a sagemaker or azure_ml endpoint."""

    format: Literal["openai", "tgi"] = Field(
        default="openai",
        description="openai: the container serves OpenAI's chat messages API (vLLM, TGI's "
        "Messages API, LMI); tgi: TGI's inputs/parameters generate API.",
    )


BATCH_API_PROVIDERS = frozenset({"openai_compatible", "anthropic", "bedrock"})
"""The providers whose batch API the gateway speaks."""


class ModelConfig(Strict):
    """A model the gateway can send requests to."""

    provider: Provider = Field(
        description="openai_compatible speaks the OpenAI API (Chat Completions, or Embeddings for "
        "kind embeddings): OpenAI, vLLM, TGI, TEI, SGLang, Ollama, TensorRT-LLM and Triton front "
        "ends, the bundled local-engine server. local_engine runs the bundled engine inside the "
        "gateway's own process, or with kind embeddings the bundled all-MiniLM-L6-v2. anthropic: "
        "the Messages API. azure_openai: an Azure OpenAI deployment (see azure). bedrock: the "
        "Converse API (see aws). vertex: Gemini or Claude on Vertex AI (see gcp). sagemaker and "
        "azure_ml: a model deployed behind a managed endpoint (see aws, azure and container)."
    )
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://")] | None = Field(
        default=None, description="The API root, e.g. https://api.openai.com/v1"
    )
    model: str = Field(
        min_length=1,
        description="The model name the provider expects; for local_engine a Hugging Face id, "
        "a local path, or smollm2-135m-instruct (bundled, offline).",
    )
    kind: Literal["chat", "embeddings"] = Field(
        default="chat",
        description="chat models answer chat, Messages, Responses and Completions requests; "
        "embeddings models answer /v1/embeddings.",
    )
    max_dimensions: int | None = Field(
        default=None,
        ge=1,
        description="Embeddings models that can shorten their vectors (text-embedding-3-*): the "
        "largest dimensions a request may ask for. Unset: a request with dimensions gets a 400.",
    )
    engine: EngineOptions = EngineOptions()
    aws: AwsOptions | None = Field(default=None, description="For bedrock and sagemaker.")
    gcp: GcpOptions | None = Field(default=None, description="For vertex.")
    azure: AzureOptions | None = Field(default=None, description="For azure_openai and azure_ml.")
    container: ContainerOptions | None = Field(
        default=None, description="For sagemaker and azure_ml: what the deployed model speaks."
    )
    tokenizer: str | None = Field(
        default=None,
        description="A Hugging Face tokenizer id or local directory, to count tokens exactly "
        "when the provider sends no usage (else they are estimated and marked so).",
    )
    priority_scheduling: bool = Field(
        default=False,
        description="openai_compatible: the server schedules by the body's priority (the "
        "bundled local-engine server; vLLM started with --scheduling-policy priority), so "
        "batch lines are sent with priority batch.priority and live requests go first. "
        "provider local_engine always does.",
    )
    batch_api: UpstreamBatch | None = Field(
        default=None,
        description="true (or its options): batch lines routed here go to the provider's own "
        "batch API as one upstream batch per gateway batch, instead of one call each "
        "(openai_compatible speaking OpenAI's /v1/files and /v1/batches, anthropic's Message "
        "Batches, bedrock's batch inference: needs s3_uri and role_arn).",
    )
    api_key: str | None = Field(default=None, description="Use ${ENV_VAR}, never a literal key.")
    price: Price | None = None
    fallbacks: tuple[Name, ...] = Field(default=(), description="Tried in order when this fails.")
    timeouts: Timeouts = Timeouts()
    retries: Retries = Retries()
    max_connections: int = Field(default=256, ge=1, description="Pool size towards this provider.")
    max_tokens: MaxTokens = MaxTokens()
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")

    @property
    def schedules_by_priority(self) -> bool:
        """Its server runs a request's ``priority`` (lower first) before others."""
        return self.priority_scheduling or self.provider == "local_engine"

    @model_validator(mode="before")
    @classmethod
    def _batch_api_flag(cls, data: Any) -> Any:
        """``batch_api: true`` is the options' defaults; ``false`` is none."""
        if isinstance(data, dict) and isinstance(data.get("batch_api"), bool):
            data = {**data, "batch_api": {} if data["batch_api"] else None}
        return data

    @model_validator(mode="after")
    def _batch_api_provider(self) -> ModelConfig:
        if self.batch_api is not None and (
            self.provider not in BATCH_API_PROVIDERS or self.kind != "chat"
        ):
            raise ValueError(
                f"batch_api: the gateway speaks the batch API of chat models of "
                f"{' and '.join(sorted(BATCH_API_PROVIDERS))} only, not {self.provider} "
                f"({self.kind})"
            )
        options = self.batch_api
        if self.provider == "bedrock" and options and not (options.s3_uri and options.role_arn):
            raise ValueError("batch_api: bedrock batch inference needs s3_uri and role_arn")
        return self

    @model_validator(mode="before")
    @classmethod
    def _embeddings_price(cls, data: Any) -> Any:
        """An embeddings model writes no tokens, so its price may name the input rate alone (the
        output rate is then 0)."""
        if isinstance(data, dict) and data.get("kind") == "embeddings":
            price = data.get("price")
            if isinstance(price, dict) and "input_per_mtok" in price:
                data = {**data, "price": {"output_per_mtok": 0, **price}}
        return data
