#!/usr/bin/env python3
"""What each front door adds over Chat Completions, measured side by side in one run.

    python bench/overhead/doors.py [--duration 5] [--warmup 2] [--rounds 3]
                                   [--concurrency 1] [--modes non-stream,stream]
                                   [--doors chat,messages,responses,completions,embeddings]

Starts the fast fake upstream (nginx, upstream.py) and one gateway (doors_policy.yaml), then
drives each door with wrk (doors.lua: ~200-byte bodies in the door's own wire format, unique per
request) and the upstream directly, interleaved, for ``--rounds`` rounds. A door's overhead is
its p50 less the direct p50 of the upstream endpoint it ends on (chat completions, or
embeddings); what it *adds* is its overhead less Chat Completions' overhead in the same mode.
Target (issue 14): no door adds more than 0.2 ms p50 at c=1. Prints a markdown table and
writes it to bench/overhead/doors.md.

Needs Debian's wrk and nginx (`apt-get install -y wrk nginx`) and the project venv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import upstream  # noqa: E402
from procs import Procs, free_port, wait_port  # noqa: E402
from report import loadavg, machine_note  # noqa: E402
from targets import from_template  # noqa: E402

REPO = HERE.parent.parent
PATHS = {
    "chat": "/chat/completions",
    "messages": "/messages",
    "responses": "/responses",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
TARGET_MS = 0.2


def model_for(door: str, mode: str) -> str:
    if door == "embeddings":
        return "mock-embed"
    return "mock-stream" if mode == "stream" else "mock"


def wrk(url: str, door: str, mode: str, conc: int, seconds: float) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds:g}s", "--timeout=10s", "--latency"]
    cmd += ["-s", str(HERE / "doors.lua"), url, "--", door, model_for(door, mode)]
    cmd += ["1" if mode == "stream" else "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 40).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {shlex.join(cmd)}\n{out}")
    data: dict[str, float] = json.loads(line.removeprefix("WRK_JSON "))
    if data["non2xx"] or data["socket_errors"]:
        raise SystemExit(f"errors during {door} {mode}: {data}\n{shlex.join(cmd)}")
    return data


def start_gateway(tmp: Path, procs: Procs, up_port: int) -> str:
    port = free_port()
    (tmp / "gw").mkdir()
    policy = from_template("doors_policy.yaml", tmp / "gw" / "policy.yaml", up_port)
    gateway = REPO / ".venv" / "bin" / "gateway"
    cmd = [str(gateway), "serve", "--policy", str(policy), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp / "gw-data")}
    if "PYTHONPATH" in os.environ:  # a checkout of another commit, as run.py's --baseline-ref
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    proc = procs.start(cmd, tmp / "gateway.log", cwd=tmp, env=env)
    wait_port(port, proc, 60, "gateway", tmp / "gateway.log")
    return f"http://127.0.0.1:{port}/v1"


def check(base: str, door: str) -> None:
    """One request per door before measuring: a 200 with the gateway's headers."""
    body = {
        "chat": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
        "messages": {
            "model": "mock",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        },
        "responses": {"model": "mock", "input": "hi"},
        "completions": {"model": "mock", "prompt": "hi"},
        "embeddings": {"model": "mock-embed", "input": "hi"},
    }[door]
    request = urllib.request.Request(
        base + PATHS[door], json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200 or not response.headers.get("x-gateway-model"):
            raise SystemExit(f"{door}: {response.status} {dict(response.headers)}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--modes", default="non-stream,stream")
    ap.add_argument("--doors", default=",".join(PATHS))
    ap.add_argument("--out", default=str(HERE / "doors.md"))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    doors = [d for d in args.doors.split(",") if d]
    if "chat" not in doors:
        doors.insert(0, "chat")
    if not (shutil.which("wrk") and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())):
        raise SystemExit("wrk and nginx are needed: apt-get install -y wrk nginx")
    started = time.monotonic()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="bench-doors-"))
    p50: dict[tuple[str, str, str], list[float]] = {}
    try:
        up_port = free_port()
        with (tmp / "nginx.out").open("wb") as log:
            nginx = procs.add(upstream.start_nginx(tmp, up_port, log))
        wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
        direct = {
            "non-stream": f"http://127.0.0.1:{up_port}/v1",
            "stream": f"http://127.0.0.1:{up_port}/stream/v1",
        }
        gateway = start_gateway(tmp, procs, up_port)
        for door in doors:
            check(gateway, door)
        for round_ in range(args.rounds):
            for mode in modes:
                points = [("direct", "chat"), *(("gateway", d) for d in doors)]
                if "embeddings" in doors and mode == "non-stream":
                    points.insert(1, ("direct", "embeddings"))
                for where, door in points:
                    if mode == "stream" and door == "embeddings":
                        continue
                    base = gateway if where == "gateway" else direct[mode]
                    if door == "embeddings" and where == "direct":
                        base = direct["non-stream"]
                    url = base + PATHS[door]
                    if args.warmup:
                        wrk(url, door, mode, args.concurrency, args.warmup)
                    data = wrk(url, door, mode, args.concurrency, args.duration)
                    p50.setdefault((where, door, mode), []).append(data["p50"] / 1000)
                    print(
                        f"[doors] round {round_ + 1} {mode:10s} {where:7s} {door:11s} "
                        f"p50 {data['p50'] / 1000:.3f} ms  p99 {data['p99'] / 1000:.3f} ms",
                        file=sys.stderr,
                    )
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    md = report(p50, doors, modes, args, time.monotonic() - started)
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    return 0


def report(
    p50: dict[tuple[str, str, str], list[float]],
    doors: list[str],
    modes: list[str],
    args: argparse.Namespace,
    elapsed: float,
) -> str:
    median = {key: statistics.median(values) for key, values in p50.items()}
    lines = [
        f"# Front doors beside Chat Completions, c={args.concurrency}",
        "",
        f"- command: `python bench/overhead/doors.py {shlex.join(sys.argv[1:])}`".replace(
            " `", "`", 0
        ),
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; machine: {machine_note()}; "
        f"load after: {loadavg()}; {args.rounds} rounds of {args.duration:g} s per point "
        f"(median of the rounds' p50); {elapsed / 60:.1f} min",
        "",
        "| mode | door | gateway p50 ms | direct p50 ms | overhead ms | added over chat ms "
        "| target ≤ 0.2 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode in modes:
        chat_overhead = median[("gateway", "chat", mode)] - median[("direct", "chat", mode)]
        for door in doors:
            if ("gateway", door, mode) not in median:
                continue
            ends_on = "embeddings" if door == "embeddings" else "chat"
            direct = median[("direct", ends_on, mode)]
            overhead = median[("gateway", door, mode)] - direct
            added = overhead - chat_overhead
            verdict = "" if door == "chat" else ("PASS" if added <= TARGET_MS else "FAIL")
            lines.append(
                f"| {mode} | {door} | {median[('gateway', door, mode)]:.3f} | {direct:.3f} | "
                f"{overhead:.3f} | {'' if door == 'chat' else f'{added:+.3f}'} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
