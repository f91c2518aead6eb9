"""``local-engine serve``: load a model, then serve it over HTTP with uvicorn.

The model is loaded before the server starts, so a model that cannot be loaded stops start-up
with one line on stderr and exit status 1, never a half-started server.
"""

from __future__ import annotations

import enum
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from local_engine.engine import LocalEngine
from local_engine.errors import ModelLoadError
from local_engine.loader import SOLO_MAX_BATCH
from local_engine.models import DEFAULT_MODEL
from local_engine.server import create_app

app = typer.Typer(
    name="local-engine",
    help="An OpenAI-compatible server for a local model, with continuous batching.",
    no_args_is_help=True,
    add_completion=False,
)


class Device(enum.StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class DType(enum.StrEnum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class BackendName(enum.StrEnum):
    transformers = "transformers"
    vllm = "vllm"


class Quantization(enum.StrEnum):
    none = "none"
    int8 = "int8"
    int8_dynamic = "int8_dynamic"
    int4 = "int4"
    fp8 = "fp8"


class Speculation(enum.StrEnum):
    prompt_lookup = "prompt_lookup"
    off = "off"


@app.callback()
def _root() -> None:
    """Keeps ``serve`` a subcommand even while it is the only one."""


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="Bundled name, Hugging Face id, local directory or .gguf file.")
    ] = DEFAULT_MODEL,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.auto,
    dtype: Annotated[DType, typer.Option(help="Weights and KV cache dtype.")] = DType.auto,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Token budget of one forward pass (prefill + decode).")
    ] = None,
    max_running: Annotated[
        int | None, typer.Option(help="Requests decoded together (default 64 on CPU, 256 on GPU).")
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Requests that may wait for a slot; beyond that: 503.")
    ] = 256,
    kv_cache_tokens: Annotated[
        int | None,
        typer.Option(
            help="KV cache size in tokens (default: 2 GiB on CPU, less on a small machine; "
            "auto on GPU)."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where converted models are kept [default: $GATEWAY_DATA_DIR/models]."),
    ] = None,
    backend: Annotated[
        BackendName, typer.Option(help="transformers (continuous batching) or vllm (GPU).")
    ] = BackendName.transformers,
    quantization: Annotated[
        Quantization,
        typer.Option(
            help="Linear weights: int8 (weight-only), int8_dynamic (int8 activations too: "
            "faster on a CPU, less exact), int4 (GPU), fp8 (vllm)."
        ),
    ] = Quantization.none,
    speculation: Annotated[
        Speculation,
        typer.Option(help="Speculative decoding of a request decoded alone (greedy-exact)."),
    ] = Speculation.prompt_lookup,
    solo_max_batch: Annotated[
        int,
        typer.Option(
            help="A request is decoded alone (with speculation) while the batch holds at most "
            "this many others; -1: never."
        ),
    ] = SOLO_MAX_BATCH,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Serve MODEL on http://HOST:PORT/v1 (chat completions, models), /healthz and /metrics."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        engine = LocalEngine.load(
            model,
            device=device.value,
            dtype=dtype.value,
            max_batch_tokens=max_batch_tokens,
            max_running=max_running,
            max_queue=max_queue,
            kv_cache_tokens=kv_cache_tokens,
            cache_dir=cache_dir,
            backend=backend.value,
            quantization=quantization.value,
            speculation=speculation.value,
            solo_max_batch=solo_max_batch,
        )
    except ModelLoadError as exc:
        typer.echo(f"local-engine: error: {exc}", err=True)
        raise typer.Exit(1) from None
    uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level.lower())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
