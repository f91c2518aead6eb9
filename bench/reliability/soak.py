"""Soak: the gateway at 80 % of its measured max RPS for N minutes.

Set-up: nginx as the upstream (bench/overhead's fixed answer, microseconds a request), one
gateway with the exact cache (in process) and the SQLite ledger on, one tenant and an admin key;
a unique body per request, so the cache stores every answer and never answers one.

1. Max RPS: wrk without pacing, ``--connections`` connections, 2 s of warm-up then
   ``--max-seconds``.
2. The soak: ``pace.lua`` holds ``--load`` (0.8) of it with wrk2-style constant throughput, one
   wrk run per 30-s window, so that each window has its own latency histogram; the gateway's
   RSS (its process group, /proc) and CPU are read between windows, and the CPU of processes
   the bench did not start (others' work on a shared machine).
3. The ledger: ``GET /admin/reports/cost?tag=run=<id>`` must count every request wrk sent
   (wrk's ``request()`` calls, including those in flight when a window ended).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import stack
from procs import CLK_TCK, children_ticks, group_ticks, system_ticks
from report import Checks, header, log, ms, table

HERE = Path(__file__).resolve().parent
WINDOW_S = 30
TAIL_S = 1.5
"""The quiet end of each window: no request leaves in it, so all finish before wrk stops."""


def policy(up_port: int) -> str:
    return f"""version: 1
models:
  mock:
    provider: openai_compatible
    base_url: http://127.0.0.1:{up_port}/v1
    model: mock-model
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
baseline_model: mock
routes:
  - {{name: default, to: mock}}
tenants:
  bench: {{api_keys: ["${{BENCH_TENANT_KEY}}"]}}
admin: {{api_keys: ["${{BENCH_ADMIN_KEY}}"]}}
"""


def wrk(url: str, seconds: float, conc: int, tag: str, run: str, rate: float = 0) -> dict[str, Any]:
    threads = 2 if conc >= 2 else 1
    cmd = [shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{conc}", f"-d{seconds:g}s"]
    cmd += ["--timeout=10s", "-s", str(HERE / "pace.lua"), url, "--", stack.TENANT_KEY, tag]
    env = os.environ | {"WRK_RUN": run, "WRK_RATE": f"{rate:g}", "WRK_THREADS": str(threads)}
    if rate:
        env["WRK_STOP_MS"] = f"{(seconds - TAIL_S) * 1000:.0f}"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    return data


def errors(d: dict[str, Any]) -> int:
    return int(sum(d["errors"].values()))


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no plot: matplotlib is not installed)"
    t = [r["t_end_s"] / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [r["p99_ms"] for r in rows], "o-", label="p99 ms")
    ax.plot(t, [r["p50_ms"] for r in rows], "s-", label="p50 ms")
    ax.set_xlabel("minutes")
    ax.set_ylabel("latency, ms")
    ax2 = ax.twinx()
    ax2.plot(t, [r["rss_mib"] for r in rows], "k--", label="gateway RSS MiB")
    ax2.set_ylabel("RSS, MiB")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="lower center", ncol=3)
    ax.set_title("bench/reliability soak: per 30-s window")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return f"plot: `{path.relative_to(stack.REPO)}`"


def run(args: argparse.Namespace, tmp: Path, procs: stack.Procs) -> tuple[str, Checks]:
    head = header(f"soak, {args.minutes:g} min")
    up_port = stack.free_port()
    with (tmp / "nginx.out").open("wb") as out:
        nginx = procs.add(stack.nginx_upstream.start_nginx(tmp, up_port, out))
    stack.wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
    gw = stack.start_gateway(procs, tmp, "gateway", policy(up_port))
    stack.wait_ready(gw, 90)
    url = gw.url + "/v1/chat/completions"
    run_id = uuid.uuid4().hex[:8]

    wrk(url, 2, args.connections, "run=warmup", f"w{run_id}")
    mx = wrk(url, args.max_seconds, args.connections, "run=max", f"m{run_id}")
    max_rps = mx["requests"] / (mx["duration_us"] / 1e6)
    rate = args.load * max_rps
    log(f"max {max_rps:,.0f} RPS (errors {errors(mx)}); soak at {rate:,.0f} RPS")

    groups = {gw.proc.pid, nginx.pid}
    rss0 = stack.rss_mib(gw.proc.pid)
    n_windows = max(1, math.ceil(args.minutes * 60 / WINDOW_S))
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    tag = f"run=soak-{run_id}"
    for i in range(n_windows):
        s0, g0, k0 = system_ticks(), group_ticks(groups), children_ticks()
        d = wrk(url, WINDOW_S, args.connections, tag, f"s{run_id}-{i}", rate)
        s1, g1, k1 = system_ticks(), group_ticks(groups), children_ticks()
        busy, total = s1[0] - s0[0], s1[1] - s0[1]
        ours = sum(g1[g] - g0[g] for g in groups) + (k1 - k0)
        cpus = os.cpu_count() or 1
        row = {
            "window": i + 1,
            "t_end_s": time.monotonic() - t_start,
            "sent": d["sent"],
            "completed": d["requests"],
            "rps": d["sent"] / (WINDOW_S - TAIL_S),
            "in_flight_at_end": d["sent"] - d["requests"],
            "p50_ms": d["latency_us"]["p50"] / 1000,
            "p99_ms": d["latency_us"]["p99"] / 1000,
            "max_ms": d["latency_us"]["max"] / 1000,
            "behind_ms": d["behind_ms"],
            "errors": errors(d),
            "rss_mib": stack.rss_mib(gw.proc.pid),
            "gw_cpu_pct": (g1[gw.proc.pid] - g0[gw.proc.pid]) / CLK_TCK / WINDOW_S * 100,
            "others_cpu_pct": max(0.0, (busy - ours) / total * 100 * cpus) if total else 0.0,
        }
        rows.append(row)
        log(
            f"window {i + 1}/{n_windows}: {row['rps']:,.0f} rps p99 {row['p99_ms']:.2f} ms "
            f"errors {row['errors']} rss {row['rss_mib']:.0f} MiB "
            f"others {row['others_cpu_pct']:.0f}%"
        )

    sent = sum(r["sent"] for r in rows)
    time.sleep(1.0)
    report = stack.cost_report(gw.url, since="1d", tag=tag)
    recorded = int(report["totals"]["requests"])
    report_all = stack.cost_report(gw.url, since="1d", by="tag")
    log(f"ledger: {recorded} records for {sent} sent")

    md_rows = [
        [
            str(r["window"]), f"{r['t_end_s']:.0f}", f"{r['sent']:,}", f"{r['rps']:,.0f}",
            ms(r["p50_ms"], 2), ms(r["p99_ms"], 2), ms(r["max_ms"], 1), ms(r["behind_ms"], 0),
            str(r["errors"]), f"{r['rss_mib']:.0f}", f"{r['gw_cpu_pct']:.0f}",
            f"{r['others_cpu_pct']:.0f}",
        ]
        for r in rows
    ]  # fmt: skip
    cols = ["window", "t s", "sent", "RPS", "p50 ms", "p99 ms", "max ms", "late ms", "errors"]
    cols += ["gateway RSS MiB", "gateway CPU %", "others' CPU %"]
    total_err = sum(r["errors"] for r in rows) + errors(mx)
    p99s = sorted(r["p99_ms"] for r in rows)
    rss_end = rows[-1]["rss_mib"]
    rss_ref = rows[min(1, len(rows) - 1)]["rss_mib"]
    achieved = sent / (len(rows) * (WINDOW_S - TAIL_S))
    unanswered = sum(r["in_flight_at_end"] for r in rows)
    md = (
        f"{head}\nmax RPS (wrk, {args.connections} connections, {args.max_seconds:g} s): "
        f"{max_rps:,.0f}; soak target {args.load:.0%} of it = {rate:,.0f} RPS, "
        f"{n_windows} windows of {WINDOW_S} s (the last {TAIL_S:g} s of each quiet, so that "
        f"every request sent is answered before wrk stops); achieved {achieved:,.0f} RPS. "
        f"Gateway RSS {rss0:.0f} MiB at start, {rss_end:.0f} MiB at the end. "
        f"'late ms' is the latest a request left after its slot (pacing). "
        f"{plot(rows, Path(args.plot)) if args.plot else ''}\n\n"
        + table(cols, md_rows, "")
        + f"\n\nledger (`GET /admin/reports/cost?tag={tag}`): {recorded:,} records for "
        f"{sent:,} requests sent; all tags: "
        + ", ".join(f"{r.get('tag')}: {r['requests']}" for r in report_all.get("rows", []))
    )
    checks = Checks()
    checks.add(total_err == 0, "0 errors (non-2xx, socket errors, timeouts)", f"{total_err}")
    checks.add(unanswered == 0, "every request sent was answered", f"{unanswered} unanswered")
    checks.add(recorded == sent, "ledger records == requests sent", f"{recorded:,} / {sent:,}")
    checks.add(
        achieved >= 0.95 * rate,
        "load held (achieved >= 95 % of the target RPS)",
        f"{achieved:,.0f} / {rate:,.0f}",
    )
    checks.add(
        rss_end <= rss_ref * 1.2 + 20,
        "RSS stable after the first minute (end <= 1.2 x window 2 + 20 MiB)",
        f"{rss_ref:.0f} -> {rss_end:.0f} MiB",
    )
    log(f"p99 per window: min {p99s[0]:.2f} median {p99s[len(p99s) // 2]:.2f} max {p99s[-1]:.2f}")
    return md, checks
