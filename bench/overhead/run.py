#!/usr/bin/env python3
"""Gateway overhead benchmark: direct upstream vs our gateway vs the LiteLLM proxy, in one run.

    python bench/overhead/run.py [--duration 8] [--warmup 3] [--concurrency 1,16,64]
                                 [--modes non-stream,stream] [--skip-litellm] [--skip-gateway]
                                 [--tracing [--tracing-sdk]]

Starts, on free 127.0.0.1 ports, a fast fake OpenAI upstream (nginx, see upstream.py), the gateway
(`gateway serve --policy ...`) and the LiteLLM proxy (own venv bench/.venv-litellm, created on
first use from requirements-litellm.txt) in front of it; checks each with the official `openai`
SDK; then drives each with wrk (load.lua: 200-byte chat bodies, unique per request) at each
concurrency, stream and non-stream: per point a warm-up run, then a measured run, the targets
interleaved so that background load on the machine hits them alike. Prints a markdown table and
writes it to bench/overhead/results.md (raw numbers to results.json). Every process it starts is
stopped at the end, also on Ctrl-C or SIGTERM (and they die with it even on SIGKILL).

Needs Debian's wrk and nginx (`apt-get install -y wrk nginx`) and the project venv (openai SDK).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROJECT_VENV = REPO / ".venv"
LITELLM_VENV = REPO / "bench" / ".venv-litellm"

# Re-exec under the project venv when started with a python that lacks the openai SDK.
try:
    import openai
except ImportError:  # pragma: no cover - depends on how it is started
    _venv_py = PROJECT_VENV / "bin" / "python"
    if _venv_py.exists() and Path(sys.executable).resolve() != _venv_py.resolve():
        os.execv(str(_venv_py), [str(_venv_py), *sys.argv])
    raise SystemExit("the openai SDK is needed: run with the project venv's python") from None

sys.path.insert(0, str(HERE))
import upstream  # noqa: E402

TARGET_ADDED_P50_MS = 1.0  # at concurrency 1
TARGET_ADDED_P99_MS = 3.0  # at concurrency 1
TARGET_RPS_RATIO = 30.0  # gateway max RPS / LiteLLM max RPS
BODY_BYTES = 200
MODELS = {"non-stream": "mock", "stream": "mock-stream"}
LABELS = {
    "direct": "direct (nginx)",
    "gateway": "gateway",
    "traced": "gateway, tracing on",
    "traced-sdk": "gateway, tracing on (SDK protobuf)",
    "litellm": "LiteLLM",
}
TARGET_TRACING_P50_MS = 0.3

# --------------------------------------------------------------------------- processes


class Procs:
    """Processes we started, each in its own process group; stopped in reverse order."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[Any]] = []

    def start(self, cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[Any]:
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=upstream.die_with_parent,
                **kw,
            )
        self.items.append(proc)
        return proc

    def add(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.items.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        while self.items:
            self.stop(self.items.pop())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _check_alive(proc: subprocess.Popen[Any], what: str, log: Path) -> None:
    if proc.poll() is not None:
        raise SystemExit(f"{what} exited with {proc.returncode} while starting:\n{log_tail(log)}")


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(proc, what, log)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on port {port} in {timeout:.0f}s:\n{log_tail(log)}")


def wait_chat(
    base_url: str, proc: subprocess.Popen[Any], timeout: float, what: str, log: Path
) -> None:
    """Poll with a real chat request until it answers 200 (servers listen before they're ready)."""
    body = json.dumps(
        {"model": "mock", "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 8}
    ).encode()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        _check_alive(proc, what, log)
        req = urllib.request.Request(
            base_url + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:300]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.5)
    raise SystemExit(f"{what} not answering chats in {timeout:.0f}s ({last}):\n{log_tail(log)}")


# --------------------------------------------------------------------------- CPU accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user
    return total - idle, total


def group_ticks(pgids: set[int]) -> dict[int, int]:
    """utime+stime jiffies summed over the live processes of each process group."""
    out = dict.fromkeys(pgids, 0)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pgrp = int(rest[2])
        if pgrp in out:
            out[pgrp] += int(rest[11]) + int(rest[12])
    return out


def children_ticks() -> int:
    """CPU of our reaped children (wrk), in jiffies."""
    r = os.times()
    return round((r.children_user + r.children_system) * CLK_TCK)


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
) -> Target:
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
        # The gateway's own OTLP/HTTP JSON exporter, or the SDK's protobuf one to compare.
        protocol = "http/protobuf" if name == "traced-sdk" else "http/json"
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = protocol
    log = tmp / f"{name}.log"
    print(f"[bench] gateway: {shlex.join(cmd)}", file=sys.stderr)
    proc = procs.start(cmd, log, cwd=tmp, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    wait_port(port, proc, 60, "gateway", log)
    wait_chat(base, proc, 60, "gateway", log)
    return Target(name, LABELS[name], {"non-stream": base, "stream": base}, proc)


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


# --------------------------------------------------------------------------- load


@dataclass
class Point:
    target: str
    mode: str
    concurrency: int
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    non2xx: int = 0
    socket_errors: int = 0
    cpu_ms_per_req: float | None = None
    others_cpu_pct: float | None = None
    wrk_cmd: str = ""

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non2xx == 0 and self.socket_errors == 0


RUNNING_WRK: list[subprocess.Popen[str]] = []


def run_wrk(
    url: str, mode: str, conc: int, seconds: float, args: argparse.Namespace
) -> tuple[dict[str, Any], str]:
    threads = max(1, min(args.threads, conc))
    cmd = [args.wrk, f"-t{threads}", f"-c{conc}", f"-d{seconds:g}s", f"--timeout={args.timeout:g}s"]
    cmd += ["--latency", "-s", str(HERE / "load.lua"), url, "--", MODELS[mode]]
    cmd += ["1" if mode == "stream" else "0", str(BODY_BYTES), args.cache_control]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=upstream.die_with_parent,
    )
    RUNNING_WRK.append(proc)
    try:
        out, _ = proc.communicate(timeout=seconds + args.timeout + 30)
    finally:
        RUNNING_WRK.remove(proc)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}): {shlex.join(cmd)}\n{out}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    # Cross-check the error counter against wrk's own text report.
    for ln in out.splitlines():
        if ln.strip().startswith("Non-2xx or 3xx responses:"):
            data["non2xx_text"] = int(ln.split(":")[1])
    return data, shlex.join(cmd)


def measure(
    target: Target, mode: str, conc: int, args: argparse.Namespace, pgids: dict[str, int]
) -> Point:
    url = target.urls[mode] + "/chat/completions"
    if args.warmup > 0:
        run_wrk(url, mode, conc, args.warmup, args)
        time.sleep(0.3)
    groups = set(pgids.values())
    sys0, grp0, kid0 = system_ticks(), group_ticks(groups), children_ticks()
    data, cmd = run_wrk(url, mode, conc, args.duration, args)
    sys1, grp1, kid1 = system_ticks(), group_ticks(groups), children_ticks()
    lat, err = data["latency_us"], data["errors"]
    pt = Point(
        target=target.name,
        mode=mode,
        concurrency=conc,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        errors=err,
        non2xx=max(err["status"], data.get("non2xx_text", 0)),
        socket_errors=err["connect"] + err["read"] + err["write"] + err["timeout"],
        wrk_cmd=cmd,
    )
    pt.rps = pt.requests / pt.duration_s if pt.duration_s else 0.0
    own = pgids[target.name]
    if pt.requests:
        pt.cpu_ms_per_req = (grp1[own] - grp0[own]) / CLK_TCK * 1000 / pt.requests
    # CPU used by processes this benchmark did not start (other people's work on the shared
    # cores): the machine's busy time less our servers' and wrk's (a reaped child of ours).
    busy, total = sys1[0] - sys0[0], sys1[1] - sys0[1]
    ours = sum(grp1[g] - grp0[g] for g in groups) + (kid1 - kid0)
    if total > 0:
        pt.others_cpu_pct = max(0.0, (busy - ours) / total * 100 * (os.cpu_count() or 1))
    return pt


# --------------------------------------------------------------------------- report


def fmt(v: float | None, nd: int = 2) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def results_table(points: list[Point], args: argparse.Namespace, labels: dict[str, str]) -> str:
    by = {(p.target, p.mode, p.concurrency): p for p in points}
    head = [
        "mode", "c", "target", "RPS", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
        "gateway/LiteLLM RPS", "non-2xx", "socket err", "CPU ms/req", "others' CPU %",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: | --- |" + " ---: |" * 10]
    for mode in args.modes:
        for c in args.concurrency:
            d, lite = by.get(("direct", mode, c)), by.get(("litellm", mode, c))
            for t in ("direct", "gateway", "traced", "traced-sdk", "litellm"):
                p = by.get((t, mode, c))
                if p is None:
                    continue
                add50 = add99 = ratio = None
                if t != "direct" and d is not None and p.requests and d.requests:
                    add50, add99 = p.p50_ms - d.p50_ms, p.p99_ms - d.p99_ms
                if t == "gateway" and lite is not None and lite.rps > 0:
                    ratio = p.rps / lite.rps
                p50, p99 = (p.p50_ms, p.p99_ms) if p.requests else (None, None)
                cells = [
                    mode, str(c), labels[t] + ("" if p.valid else " **INVALID**"),
                    fmt(p.rps, 0), fmt(p50, 3), fmt(p99, 3),
                    fmt(add50, 3), fmt(add99, 3), "" if ratio is None else fmt(ratio, 1) + "×",
                    str(p.non2xx), str(p.socket_errors),
                    fmt(p.cpu_ms_per_req, 3), fmt(p.others_cpu_pct, 0),
                ]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(points: list[Point], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    by = {(p.target, p.mode, p.concurrency): p for p in points}
    out: list[tuple[str, str, str]] = []

    def verdict(valid: bool, ok: bool) -> str:
        return "PASS" if valid and ok else "FAIL" if valid else "INVALID (errors in a point)"

    for mode in args.modes:
        g, d = by.get(("gateway", mode, 1)), by.get(("direct", mode, 1))
        if g and d:
            ok = g.valid and d.valid
            a50, a99 = g.p50_ms - d.p50_ms, g.p99_ms - d.p99_ms
            out.append(
                (f"{mode}, c=1: gateway added p50 ≤ {TARGET_ADDED_P50_MS:g} ms",
                 f"{a50:.3f} ms", verdict(ok, a50 <= TARGET_ADDED_P50_MS))
            )  # fmt: skip
            out.append(
                (f"{mode}, c=1: gateway added p99 ≤ {TARGET_ADDED_P99_MS:g} ms",
                 f"{a99:.3f} ms", verdict(ok, a99 <= TARGET_ADDED_P99_MS))
            )  # fmt: skip
    for mode in args.modes:
        for name, how in (("traced", ""), ("traced-sdk", " (SDK protobuf path, to compare)")):
            g, t = by.get(("gateway", mode, 1)), by.get((name, mode, 1))
            if g and t:
                added = t.p50_ms - g.p50_ms
                out.append(
                    (f"{mode}, c=1: tracing on adds ≤ {TARGET_TRACING_P50_MS:g} ms p50{how}",
                     f"{added:.3f} ms",
                     verdict(g.valid and t.valid, added <= TARGET_TRACING_P50_MS))
                )  # fmt: skip
    for mode in args.modes:
        gs = [p for p in points if p.target == "gateway" and p.mode == mode]
        ls = [p for p in points if p.target == "litellm" and p.mode == mode]
        if gs and ls:
            g, lt = max(gs, key=lambda p: p.rps), max(ls, key=lambda p: p.rps)
            ratio = g.rps / lt.rps if lt.rps else float("inf")
            ok = all(p.valid for p in gs + ls)
            measured = (
                f"{ratio:.1f}× ({g.rps:,.0f} RPS at c={g.concurrency} "
                f"vs {lt.rps:,.0f} at c={lt.concurrency})"
            )
            name = f"{mode}: gateway max RPS ≥ {TARGET_RPS_RATIO:g}× LiteLLM max RPS"
            out.append((name, measured, verdict(ok, ratio >= TARGET_RPS_RATIO)))
    return out


def build_report(
    points: list[Point], meta: dict[str, Any], args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    labels = meta["labels"]
    checks = verdicts(points, args)
    vlines = ["| target | measured | result |", "| --- | --- | --- |"]
    vlines += [f"| {n} | {v} | {r} |" for n, v, r in checks]
    if not checks:
        vlines.append("| (needs the gateway, direct and LiteLLM in the same run) | – | – |")
    cache = f"`Cache-Control: {args.cache_control}`" if args.cache_control else "no Cache-Control"
    notes = [
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']} (the run took {meta['elapsed_s']:.0f} s)",
        f"- Machine: {meta['machine']}. Load average before / after: {meta['loadavg_before']} / "
        f'{meta["loadavg_after"]}. The machine is shared: "others\' CPU %" is the CPU used during '
        "the measured run by processes this benchmark did not start (out of "
        f"{(os.cpu_count() or 1) * 100} %); rows with a high value are noisy.",
        f"- Versions: {meta['versions']}",
        f"- Load: wrk, {args.threads} thread(s) (at most c); per point {args.warmup:g} s warm-up "
        f"then {args.duration:g} s measured; the targets interleaved point by point. "
        f"{BODY_BYTES}-byte JSON chat bodies, unique per request (a counter in the user message, "
        f"so no exact cache can answer), {cache}; stream bodies ask for "
        "`stream_options.include_usage`.",
        "- Upstream: nginx, 1 worker, a fixed `chat.completion` JSON "
        f"({len(upstream.completion_body())} B) and a fixed SSE body of 7 events "
        f"({len(upstream.stream_body())} B). Each target was checked with the official openai "
        "SDK before the load (exact content and usage, stream and non-stream).",
        "- Added latency = target percentile − direct percentile at the same mode and concurrency "
        "(a difference of percentiles, not a percentile of differences). CPU ms/req = CPU time "
        "of the target's own server processes per request (nginx for direct; the proxy alone "
        "otherwise). Max RPS = the highest RPS over the concurrencies measured.",
    ]
    invalid = [p for p in points if not p.valid]
    if invalid:
        notes.append(
            "- **INVALID rows** (non-2xx responses or socket errors): "
            + ", ".join(f"{p.target}/{p.mode}/c={p.concurrency} {p.errors}" for p in invalid)
        )
    for t, info in meta["checks"].items():
        if info:
            notes.append(f"- SDK check, {labels[t]}: {json.dumps(info, sort_keys=True)}")
    md = "\n".join(
        [
            "# Gateway overhead benchmark (bench/overhead)",
            "",
            'Preliminary when the machine was shared (see "others\' CPU %").',
            "",
            "## Results",
            "",
            results_table(points, args, labels),
            "",
            "## Targets",
            "",
            *vlines,
            "",
            "## Setup",
            "",
            *notes,
            "",
        ]
    )
    summary = {
        "targets": [{"target": n, "measured": v, "result": r} for n, v, r in checks],
        "points": [asdict(p) | {"valid": p.valid} for p in points],
        "meta": meta,
    }
    return md, summary


def machine_note() -> str:
    info = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "unknown CPU",
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kb = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {kb / 1024 / 1024:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "?"


def gateway_version() -> str:
    dists = importlib.metadata.packages_distributions().get("gateway", [])
    try:
        v = f"{dists[0]} {importlib.metadata.version(dists[0])}" if dists else "?"
    except importlib.metadata.PackageNotFoundError:
        v = "?"
    git = ["git", "-C", str(REPO)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "gateway"], capture_output=True, text=True
    )
    mod = ", with uncommitted changes in gateway/" if dirty.stdout.strip() else ""
    return f"{v} (git {rev.stdout.strip() or '?'}{mod})"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = ap.add_argument
    add("--duration", type=float, default=8.0, help="measured seconds per point (default 8)")
    add("--warmup", type=float, default=3.0, help="warm-up seconds per point (default 3)")
    add("--concurrency", default="1,16,64", help="connection counts (default 1,16,64)")
    add("--modes", default="non-stream,stream", help="non-stream,stream (default both)")
    add("--skip-litellm", action="store_true", help="don't start or measure LiteLLM")
    add("--skip-gateway", action="store_true", help="don't start or measure the gateway")
    add(
        "--tracing",
        action="store_true",
        help="also measure a second gateway exporting every trace over OTLP/HTTP",
    )
    add(
        "--tracing-sdk",
        action="store_true",
        help="with --tracing: and a third exporting through the SDK's protobuf exporter",
    )
    add("--threads", type=int, default=1, help="wrk threads (default 1, at most c)")
    add("--timeout", type=float, default=10.0, help="wrk request timeout, s (default 10)")
    add("--cache-control", default="", help="a Cache-Control header to send (default none)")
    gw = PROJECT_VENV / "bin" / "gateway"
    add(
        "--gateway-cmd",
        default=f"{gw if gw.exists() else 'gateway'} serve",
        help="starts the gateway; --policy, --host and --port are appended",
    )
    add("--gateway-args", default="", help="more gateway arguments, e.g. '--log-level warning'")
    add("--wrk", default=shutil.which("wrk") or "wrk")
    add("--out", default=str(HERE / "results.md"), help="markdown report ('' for none)")
    add("--json", default=str(HERE / "results.json"), help="raw JSON results ('' for none)")
    add("--keep-tmp", action="store_true", help="keep the temp dir (configs, server logs)")
    a = ap.parse_args(argv)
    a.concurrency = [int(x) for x in a.concurrency.split(",") if x.strip()]
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in a.modes:
        if m not in MODELS:
            ap.error(f"unknown mode {m!r}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which(args.wrk) or not (
        shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    ):
        raise SystemExit("wrk and nginx are needed: apt-get install -y wrk nginx")
    t0 = time.monotonic()
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "bench/overhead/run.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_note(),
        "loadavg_before": loadavg(),
        "labels": dict(LABELS),
        "checks": {},
    }
    procs = Procs()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    points: list[Point] = []
    keep = args.keep_tmp
    try:
        up_port = free_port()
        with (tmp / "nginx.out").open("wb") as out:
            nginx = procs.add(upstream.start_nginx(tmp, up_port, out))
        wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
        up = f"http://127.0.0.1:{up_port}"
        urls = {"non-stream": f"{up}/v1", "stream": f"{up}/stream/v1"}
        targets = [Target("direct", LABELS["direct"], urls, nginx)]
        if not args.skip_gateway:
            targets.append(start_gateway(args, tmp, procs, up_port))
            if args.tracing:
                otlp = start_otlp_sink()
                targets.append(start_gateway(args, tmp, procs, up_port, "traced", otlp))
                if args.tracing_sdk:
                    targets.append(start_gateway(args, tmp, procs, up_port, "traced-sdk", otlp))
        if not args.skip_litellm:
            targets.append(start_litellm(args, tmp, procs, up_port))
            meta["labels"]["litellm"] = targets[-1].label
        for t in targets:
            meta["checks"][t.name] = check_with_sdk(t)
            print(f"[bench] {t.label}: SDK check ok {meta['checks'][t.name]}", file=sys.stderr)
        pgids = {t.name: t.proc.pid for t in targets}  # each leads its own process group
        versions = [
            tool_version(["nginx", "-v"]).replace("nginx version: ", ""),
            tool_version([args.wrk, "-v"]).split(" [")[0],
        ]
        if not args.skip_gateway:
            versions.append("gateway: " + gateway_version())
        if not args.skip_litellm:
            versions.append(f"litellm {targets[-1].info['version']}")
        versions.append(f"openai SDK {openai.__version__}")
        meta["versions"] = ", ".join(versions)

        n = len(args.modes) * len(args.concurrency) * len(targets)
        est = n * (args.duration + args.warmup + 0.7)
        print(f"[bench] {n} points, about {est / 60:.1f} min of load", file=sys.stderr)
        for mode in args.modes:
            for c in args.concurrency:
                for t in targets:
                    pt = measure(t, mode, c, args, pgids)
                    points.append(pt)
                    print(
                        f"[bench] {mode:10s} c={c:<3d} {t.label:16s} {pt.rps:8.0f} rps  "
                        f"p50 {pt.p50_ms:8.3f} ms  p99 {pt.p99_ms:8.3f} ms  "
                        f"non2xx {pt.non2xx}  sockerr {pt.socket_errors}  "
                        f"cpu/req {fmt(pt.cpu_ms_per_req, 3)} ms  "
                        f"others {fmt(pt.others_cpu_pct, 0)}%",
                        file=sys.stderr,
                    )
                    time.sleep(0.3)
    except KeyboardInterrupt:
        print("\n[bench] interrupted; stopping everything", file=sys.stderr)
        return 130
    except BaseException:
        keep = True
        raise
    finally:
        for p in list(RUNNING_WRK):
            procs.stop(p, 1)
        procs.stop_all()
        if keep:
            print(f"[bench] temp dir with configs and logs kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta["elapsed_s"] = time.monotonic() - t0
    meta["loadavg_after"] = loadavg()
    md, summary = build_report(points, meta, args)
    print(md)
    if args.out:
        Path(args.out).write_text(md)
        print(f"[bench] wrote {args.out}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0 if all(p.valid for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
