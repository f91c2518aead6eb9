#!/usr/bin/env python3
"""Streams at real answer lengths: what each streamed chunk costs the gateway, next to its peers.

    python bench/stream/run.py [--lengths 20,200,1000] [--concurrency 16] [--duration 6]
                               [--warmup 2] [--skip-litellm] [--skip-portkey]

One run, on free 127.0.0.1 ports: nginx serving fixed streams of 20, 200 and 1,000 content
chunks (streams.py) as fast as the socket takes them; **direct** (wrk against nginx), the
**gateway** in front of it (bench/stream/policy.yaml: one model per length, the exact cache and
the SQLite ledger on, a unique body per request), the same gateway answering a repeated body
from its exact cache (**replay**), the **LiteLLM** proxy (bench/overhead's venv, one worker) and
the **Portkey** gateway (@portkey-ai/gateway on one Node process, installed with npm into
bench/.venv-portkey on first use). Each is checked with the openai SDK at every length (exact
text and usage), then driven by wrk (load.lua: bench/overhead's 200-byte bodies), the targets
interleaved point by point. Per point: requests and content chunks per second, CPU µs per
request and per chunk (the /proc ticks of the target's process group, as bench/overhead
reads them), the CPU others used; then, per target and length, the time to the first ``data:``
byte and to the end at c=1 (`ttfb.py`). The gateway's added CPU per chunk is the slope of its
CPU per request between two lengths, which leaves its fixed cost per request out.

Prints a markdown report and writes results.md (raw numbers in results.json) here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OVERHEAD = HERE.parent / "overhead"
sys.path.insert(0, str(OVERHEAD))
sys.path.insert(0, str(HERE))
import openai  # noqa: E402
import report  # noqa: E402
import streams  # noqa: E402
import targets  # noqa: E402
import ttfb  # noqa: E402
from procs import (  # noqa: E402
    CLK_TCK,
    Procs,
    children_ticks,
    free_port,
    group_ticks,
    system_ticks,
    wait_port,
)
from targets import Target  # noqa: E402

PORTKEY_DIR = HERE.parent / ".venv-portkey"
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"
BODY_BYTES = 200
GATEWAYS = ("gateway", "baseline")
"""The targets with an exact cache: each also has a row of replays ("<name>-replay")."""


@dataclass
class Point:
    target: str
    chunks: int
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int
    """Non-2xx answers and socket errors: a point with any measures nothing."""
    cpu_us_per_req: float | None
    """None when no request finished within the point."""
    others_cpu_pct: float

    @property
    def cpu_us_per_chunk(self) -> float | None:
        return None if self.cpu_us_per_req is None else self.cpu_us_per_req / self.chunks


# --------------------------------------------------------------------------- targets


def start_portkey(tmp: Path, procs: Procs) -> Target:
    """The Portkey gateway on one Node process; it reaches nginx through its custom-host header
    (set per length by `urls_and_headers`)."""
    server = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not server.exists():
        print(f"[bench] one-time npm install of {PORTKEY_PACKAGE}", file=sys.stderr)
        npm = ["npm", "install", "--prefix", str(PORTKEY_DIR), "--no-audit", "--no-fund"]
        subprocess.run([*npm, PORTKEY_PACKAGE], check=True)
    port = free_port()
    log = tmp / "portkey.log"
    node = ["node", "--require", str(HERE / "portkey_fetch.cjs"), str(server)]
    proc = procs.start([*node, f"--port={port}", "--headless"], log, cwd=tmp)
    wait_port(port, proc, 60, "portkey", log)
    return Target(
        "portkey", "Portkey 1.15.2 (Node, 1 process)", {"base": f"http://127.0.0.1:{port}/v1"}, proc
    )


def start_python_peers(args: argparse.Namespace, tmp: Path, procs: Procs, up: int) -> list[Target]:
    """The gateway and LiteLLM, started by bench/overhead's code from this folder's templates
    (policy.yaml, litellm_config.yaml: a model per stream length)."""
    targets.ensure_litellm()  # before the templates move: it reads its requirements from there
    targets.HERE = HERE
    targets.LABELS |= {"gateway": "gateway", "litellm": "LiteLLM"}
    started = [targets.start_gateway(args, tmp, procs, up)]
    if args.baseline_ref:
        source = targets.checkout(args.baseline_ref, tmp / "baseline-src")
        targets.LABELS["baseline"] = f"gateway at {args.baseline_ref}"
        started.append(targets.start_gateway(args, tmp, procs, up, "baseline", source=source))
    if not args.skip_litellm:
        started.append(targets.start_litellm(args, tmp, procs, up))
    for t in started:
        t.urls = {"base": t.urls["stream"]}
    return started


def urls_and_headers(target: Target, up: str, n: int) -> tuple[str, dict[str, str]]:
    """Where a target takes a stream of n chunks, and the headers it needs for it."""
    if target.name == "direct":
        return f"{up}/s{n}/v1", {}
    if target.name == "portkey":
        return target.urls["base"], {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{up}/s{n}/v1",
            "authorization": "Bearer sk-bench",
        }
    return target.urls["base"], {}


def check_with_sdk(target: Target, up: str, lengths: list[int]) -> None:
    """Every length through the official openai SDK: the exact text and usage come back (and,
    for the gateway, a repeat comes back from the exact cache, the same)."""
    for n in lengths:
        base, headers = urls_and_headers(target, up, n)
        client = openai.OpenAI(
            base_url=base, api_key="sk-bench", max_retries=0, timeout=60, default_headers=headers
        )
        question = f"sdk check {n} {time.time()}"
        for attempt in ("miss", "exact") if target.name in GATEWAYS else ("miss",):
            with client.chat.completions.with_streaming_response.create(
                model=f"s{n}",
                messages=[{"role": "user", "content": question}],
                stream=True,
                stream_options={"include_usage": True},
            ) as raw:
                text, usage = "", None
                for chunk in raw.parse():
                    text += "".join(c.delta.content or "" for c in chunk.choices)
                    usage = chunk.usage or usage
                cache = raw.headers.get("x-gateway-cache", attempt)
            time.sleep(0.2)  # the cache copy is stored after the response
            if text != streams.content(n) or usage is None or usage.completion_tokens != n:
                raise SystemExit(f"{target.label}, {n} chunks: wrong text or usage ({usage})")
            if cache != attempt:
                raise SystemExit(
                    f"{target.label}, {n} chunks: x-gateway-cache {cache} != {attempt}"
                )


# --------------------------------------------------------------------------- load


def run_wrk(
    url: str,
    model: str,
    stream: bool,
    conc: int,
    seconds: float,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    cmd = [args.wrk, "-t1", f"-c{conc}", f"-d{seconds:g}s", f"--timeout={args.timeout:g}s"]
    cmd += ["--latency", "-s", str(HERE / "load.lua"), url + "/chat/completions", "--"]
    cmd += [model, "1" if stream else "0", str(BODY_BYTES), ""]
    env = os.environ | {"OVERHEAD_LOAD_LUA": str(OVERHEAD / "load.lua")} | env
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=seconds + args.timeout + 30
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {shlex.join(cmd)}\n{out}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    return data


def measure(
    target: Target, name: str, n: int, up: str, args: argparse.Namespace, groups: set[int]
) -> Point:
    """One point: a warm-up, then the measured run with the CPU ticks read around it. ``name``
    is the row's: "<gateway>-replay" is that gateway sent one body over and over."""
    base, headers = urls_and_headers(target, up, n)
    env = {"WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}
    env["WRK_SAME_BODY"] = "1" if name.endswith("-replay") else "0"
    model, conc = f"s{n}" if n else "mock", args.concurrency
    if args.warmup > 0:
        run_wrk(base, model, n > 0, conc, args.warmup, env, args)
        time.sleep(0.3)
    sys0, grp0, kid0 = system_ticks(), group_ticks(groups), children_ticks()
    data = run_wrk(base, model, n > 0, conc, args.duration, env, args)
    sys1, grp1, kid1 = system_ticks(), group_ticks(groups), children_ticks()
    requests, errors = data["requests"], data["errors"]
    own = target.proc.pid
    busy, total = sys1[0] - sys0[0], sys1[1] - sys0[1]
    ours = sum(grp1[g] - grp0[g] for g in groups) + (kid1 - kid0)
    return Point(
        target=name,
        chunks=n,
        concurrency=conc,
        requests=requests,
        rps=requests / (data["duration_us"] / 1e6),
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        failed=sum(errors.values()),
        cpu_us_per_req=(grp1[own] - grp0[own]) / CLK_TCK * 1e6 / requests if requests else None,
        others_cpu_pct=max(0.0, (busy - ours) / max(total, 1) * 100 * (os.cpu_count() or 1)),
    )


# --------------------------------------------------------------------------- report


def slope(points: list[Point], name: str, a: int, b: int) -> float | None:
    """The target's added CPU per chunk between lengths a and b (µs), fixed costs left out."""
    by = {p.chunks: p for p in points if p.target == name}
    before, after = by.get(a), by.get(b)
    if (
        before is None
        or after is None
        or before.cpu_us_per_req is None
        or after.cpu_us_per_req is None
    ):
        return None
    return (after.cpu_us_per_req - before.cpu_us_per_req) / (b - a)


def table(
    points: list[Point], times: dict[tuple[str, int], ttfb.Times], labels: dict[str, str]
) -> str:
    head = ["chunks", "target", "RPS", "chunks/s", "CPU µs/req", "CPU µs/chunk",
            "added CPU µs/chunk", "p50 ms", "TTFB p50 ms (c=1)", "total p50 ms (c=1)",
            "gateway / this RPS", "failed", "others' CPU %"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| ---: | --- |" + " ---: |" * (len(head) - 2)]
    by = {(p.target, p.chunks): p for p in points}
    lengths = sorted({p.chunks for p in points if p.chunks})
    for p in sorted(points, key=lambda p: p.chunks):
        lower = [n for n in lengths if n < p.chunks]
        added = slope(points, p.target, lower[-1], p.chunks) if lower and p.chunks else None
        t = times.get((p.target, p.chunks))
        mine = "gateway-replay" if p.target == "baseline-replay" else "gateway"
        g = (
            by.get((mine, p.chunks))
            if p.target not in ("gateway", "gateway-replay", "direct")
            else None
        )
        ratio = g.rps / p.rps if g and p.rps else None
        cells = [
            str(p.chunks) if p.chunks else "not streamed", labels[p.target],
            report.fmt(p.rps, 0), report.fmt(p.rps * p.chunks, 0) if p.chunks else "",
            report.fmt(p.cpu_us_per_req, 0), report.fmt(p.cpu_us_per_chunk, 1) if p.chunks else "",
            "" if added is None else f"{added:.1f} (from {lower[-1]})", report.fmt(p.p50_ms, 2),
            report.fmt(t.first_ms if t else None, 3), report.fmt(t.total_ms if t else None, 3),
            "" if ratio is None else f"{ratio:.2f}×", str(p.failed),
            report.fmt(p.others_cpu_pct, 0),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(points: list[Point]) -> list[str]:
    by = {(p.target, p.chunks): p for p in points}
    lines = ["| target (issue 21) | measured | result |", "| --- | --- | --- |"]

    def row(name: str, measured: str, ok: bool, *used: Point | None) -> None:
        valid = all(p is not None and p.failed == 0 for p in used)
        lines.append(
            f"| {name} | {measured} | {('PASS' if ok else 'FAIL') if valid else 'INVALID'} |"
        )

    lengths = sorted({p.chunks for p in points if p.chunks})
    for a, b in itertools.pairwise(lengths):
        s = slope(points, "gateway", a, b)
        if s is not None:
            row(f"gateway's added CPU per chunk ≤ 10 µs ({a} → {b} chunks)", f"{s:.1f} µs", s <= 10,
                by.get(("gateway", a)), by.get(("gateway", b)))  # fmt: skip
    g, pk = by.get(("gateway", 200)), by.get(("portkey", 200))
    if g and pk:
        ratio = g.rps / pk.rps if pk.rps else float("inf")
        measured = f"{ratio:.2f}× ({g.rps:,.0f} / {pk.rps:,.0f})"
        row("200 chunks: gateway RPS ≥ 3× Portkey's", measured, ratio >= 3, g, pk)
    plain = by.get(("gateway", 0))
    if g and plain:
        share = g.rps / plain.rps
        measured = f"{share:.0%} ({g.rps:,.0f} / {plain.rps:,.0f})"
        row(
            "200 chunks: gateway RPS ≥ 50 % of its non-streamed RPS",
            measured,
            share >= 0.5,
            g,
            plain,
        )
    r, d = by.get(("gateway-replay", 200)), by.get(("direct", 200))
    if r and d:
        share = r.rps / d.rps
        measured = f"{share:.0%} ({r.rps:,.0f} / {d.rps:,.0f})"
        row("200 chunks: exact-cache replay RPS ≥ 30 % of direct's", measured, share >= 0.3, r, d)
    return lines


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = ap.add_argument
    add("--lengths", default="20,200,1000", help="content chunks per stream (default 20,200,1000)")
    add("--concurrency", type=int, default=16, help="wrk connections (default 16)")
    add("--duration", type=float, default=6.0, help="measured seconds per point (default 6)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds per point (default 2)")
    add("--ttfb-requests", type=int, default=100, help="c=1 requests per TTFB probe (default 100)")
    add("--timeout", type=float, default=20.0, help="wrk request timeout, s (default 20)")
    add("--skip-litellm", action="store_true")
    add(
        "--litellm-max",
        type=int,
        default=200,
        help="longest stream sent to LiteLLM (default "
        "200: at 1,000 chunks it takes over a second a request, alone)",
    )
    add("--skip-portkey", action="store_true")
    add("--gateway-args", default="--log-level warning", help="more `gateway serve` arguments")
    add("--baseline-ref", default="", help="also measure the gateway at this commit, side by side")
    add("--wrk", default=shutil.which("wrk") or "wrk")
    add("--out", default=str(HERE / "results.md"), help="markdown report ('' for none)")
    a = ap.parse_args()
    a.lengths = [int(x) for x in a.lengths.split(",")]
    gw = targets.REPO / ".venv" / "bin" / "gateway"
    a.gateway_cmd = f"{gw if gw.exists() else 'gateway'} serve"
    return a


def main() -> int:
    args = parse_args()
    started_at, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    load_before = report.loadavg()
    procs, tmp = Procs(), Path(tempfile.mkdtemp(prefix="bench-stream-"))
    points: list[Point] = []
    times: dict[tuple[str, int], ttfb.Times] = {}
    try:
        up_port = free_port()
        nginx = streams.start_nginx(tmp, up_port, args.lengths, procs)
        wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
        up = f"http://127.0.0.1:{up_port}"
        direct = Target("direct", "direct (nginx)", {}, nginx)
        peers = start_python_peers(args, tmp, procs, up_port)
        if not args.skip_portkey:
            peers.append(start_portkey(tmp, procs))
        everyone = [direct, *peers]
        for t in everyone:
            check_with_sdk(t, up, args.lengths)
            print(f"[bench] {t.label}: SDK check ok", file=sys.stderr)
        labels = {t.name: t.label for t in everyone}
        labels |= {f"{t.name}-replay": f"{t.label}, exact-cache replay" for t in everyone}
        gateways = [t for t in peers if t.name in GATEWAYS]
        groups = {t.proc.pid for t in everyone}
        rows = [(t, name, 0) for t in gateways for name in (t.name, f"{t.name}-replay")]
        for n in args.lengths:
            rows.append((direct, "direct", n))
            rows += [(t, t.name, n) for t in peers if t.name != "litellm" or n <= args.litellm_max]
            rows += [(t, f"{t.name}-replay", n) for t in gateways]
        for target, name, n in rows:
            p = measure(target, name, n, up, args, groups)
            points.append(p)
            print(f"[bench] {p}", file=sys.stderr)
        for target, name, n in rows:
            if n:
                base, headers = urls_and_headers(target, up, n)
                replay = name.endswith("-replay")
                times[(name, n)] = ttfb.probe(base, f"s{n}", headers, args.ttfb_requests, replay)
                print(f"[bench] ttfb {name} {n}: {times[(name, n)]}", file=sys.stderr)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    versions = f"LiteLLM {targets.litellm_version()}, {PORTKEY_PACKAGE}"
    versions += f", gateway: {report.gateway_version()}"
    md = "\n".join(
        [
            "# Streams at real answer lengths (bench/stream)",
            "",
            table(points, times, labels),
            "",
            *verdicts(points),
            "",
            f"- Command: `{shlex.join(['python', 'bench/stream/run.py', *sys.argv[1:]])}`",
            f"- Date: {started_at:%Y-%m-%d %H:%M} UTC, {time.monotonic() - t0:.0f} s; load average "
            f"before / after: {load_before} / {report.loadavg()}; {report.machine_note()}",
            f"- Versions: {versions}",
            f"- Load: wrk, 1 thread, c={args.concurrency}, {args.warmup:g} s warm-up then "
            f"{args.duration:g} s per point; {BODY_BYTES}-byte bodies, unique per request except "
            "for the replay rows (one body over and over: every answer after the first is an "
            "exact-cache hit). TTFB: the time to the first `data:` byte, c=1, "
            f"{args.ttfb_requests} requests per cell, keep-alive.",
            "",
        ]
    )
    print(md)
    if args.out:
        Path(args.out).write_text(md)
        raw = {
            "points": [asdict(p) for p in points],
            "ttfb": {f"{k[0]}/{k[1]}": asdict(v) for k, v in times.items()},
        }
        Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    return 0 if all(p.failed == 0 for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
