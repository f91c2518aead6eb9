"""bench/overhead's targets: the servers it measures (the gateway, a gateway at another commit,
the LiteLLM proxy), started on free ports, each checked with the official openai SDK."""

from __future__ import annotations

import argparse
import atexit
import http.server
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import upstream
from procs import Procs, free_port, wait_chat, wait_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LITELLM_VENV = REPO / "bench" / ".venv-litellm"
MODELS = {"non-stream": "mock", "stream": "mock-stream"}
LABELS = {
    "direct": "direct (nginx)",
    "gateway": "gateway",
    "traced": "gateway, tracing on",
    "baseline": "gateway at --baseline-ref",
    "litellm": "LiteLLM",
}

# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str  # direct | gateway | litellm
    label: str
    urls: dict[str, str]  # mode -> base URL (ends in /v1)
    proc: subprocess.Popen[Any]
    info: dict[str, Any] = field(default_factory=dict)


def check_with_sdk(target: Target) -> dict[str, Any]:
    """A non-stream and a stream call through the official openai SDK: exact content and usage."""
    seen: dict[str, Any] = {}
    for mode, model in MODELS.items():
        client = openai.OpenAI(
            base_url=target.urls[mode], api_key="sk-bench", max_retries=0, timeout=30
        )
        msgs: Any = [{"role": "user", "content": f"sdk check {mode} {time.time()}"}]
        if mode == "non-stream":
            raw: Any = client.chat.completions.with_raw_response.create(
                model=model, messages=msgs, max_tokens=64
            )
            c = raw.parse()
            text, usage = c.choices[0].message.content, c.usage
        else:
            with client.chat.completions.with_streaming_response.create(
                model=model,
                messages=msgs,
                max_tokens=64,
                stream=True,
                stream_options={"include_usage": True},
            ) as raw:
                text, usage, n = "", None, 0
                for chunk in raw.parse():
                    n += 1
                    text += "".join(ch.delta.content or "" for ch in chunk.choices)
                    usage = chunk.usage or usage
            seen["stream_chunks"] = n
        if text != upstream.CONTENT:
            raise SystemExit(f"{target.label} {mode}: content {text!r} != {upstream.CONTENT!r}")
        if usage is None or usage.total_tokens != upstream.USAGE["total_tokens"]:
            raise SystemExit(f"{target.label} {mode}: usage wrong: {usage}")
        gw = {k: v for k, v in raw.headers.items() if k.lower().startswith("x-gateway-")}
        gw.pop("x-gateway-request-id", None)
        if gw:
            seen[f"{mode} headers"] = gw
    return seen


def from_template(name: str, dest: Path, upstream_port: int) -> Path:
    dest.write_text((HERE / name).read_text().replace("${UPSTREAM_PORT}", str(upstream_port)))
    return dest


class _OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports (and drops them), so the traced gateway really exports.
    HTTP/1.1, so that exporters keep their connection open, as they do with a collector."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_otlp_sink() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def start_gateway(
    args: argparse.Namespace,
    tmp: Path,
    procs: Procs,
    up_port: int,
    name: str = "gateway",
    otlp: str | None = None,
    source: Path | None = None,
) -> Target:
    """A gateway on the shared policy; ``source``: run the ``gateway`` package found there (a
    checkout of another commit) instead of the installed one, with the same venv."""
    port = free_port()
    # The policy gets a folder of its own: the gateway watches the policy's folder for changes.
    (tmp / name).mkdir()
    policy = from_template("policy.yaml", tmp / name / "policy.yaml", up_port)
    cmd = [*shlex.split(args.gateway_cmd), "--policy", str(policy)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *shlex.split(args.gateway_args)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp / f"{name}-data")
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
        env["OTEL_METRICS_EXPORTER"] = "none"
    if source is not None:  # PYTHONPATH comes before the editable install's finder
        env["PYTHONPATH"] = str(source)
    log = tmp / f"{name}.log"
    print(f"[bench] gateway: {shlex.join(cmd)}", file=sys.stderr)
    proc = procs.start(cmd, log, cwd=tmp, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    wait_port(port, proc, 60, "gateway", log)
    wait_chat(base, proc, 60, "gateway", log)
    return Target(name, LABELS[name], {"non-stream": base, "stream": base}, proc)


def checkout(ref: str, dest: Path) -> Path:
    """The repository's files as of ``ref`` (``git worktree``, removed again at the end)."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(dest), ref],
        check=True,
        capture_output=True,
    )
    atexit.register(
        subprocess.run,
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(dest)],
        capture_output=True,
    )
    return dest


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    return r.stdout.strip() or None


def ensure_litellm() -> str:
    """Create bench/.venv-litellm with the pinned LiteLLM on first use."""
    req = HERE / "requirements-litellm.txt"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        pin = req.read_text().split("\n#")[0].strip()
        print(f"[bench] one-time install of {pin} into {LITELLM_VENV}", file=sys.stderr)
        if not (LITELLM_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = str(LITELLM_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "-r", str(req)], check=True)
    v = litellm_version()
    if not v:
        raise SystemExit(f"litellm not importable from {LITELLM_VENV}")
    return v


def start_litellm(
    args: argparse.Namespace, tmp: Path, procs: Procs, up_port: int, cache: bool = False
) -> Target:
    """``cache``: LiteLLM's in-memory response cache on (bench/cache/exact_http.py)."""
    version = ensure_litellm()
    port = free_port()
    cfg = from_template("litellm_config.yaml", tmp / "litellm_config.yaml", up_port)
    if cache:
        local = "  cache: true\n  cache_params: {type: local}"
        cfg.write_text(cfg.read_text().replace("  cache: false", local))
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    skip = ("OPENAI_", "LITELLM_", "DATABASE_URL", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env |= {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch of the price map at start
        "LITELLM_TELEMETRY": "False",
        "LITELLM_MODE": "PRODUCTION",  # don't read a .env file
    }
    log = tmp / "litellm.log"
    print(f"[bench] litellm {version}: {shlex.join(cmd)}", file=sys.stderr)
    proc = procs.start(cmd, log, cwd=tmp, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    wait_port(port, proc, 180, "litellm", log)
    wait_chat(base, proc, 120, "litellm", log)
    urls = {"non-stream": base, "stream": base}
    return Target("litellm", f"LiteLLM {version}", urls, proc, {"version": version})
