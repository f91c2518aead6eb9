#!/usr/bin/env python3
"""Gateway overhead benchmark: direct upstream vs our gateway vs the LiteLLM proxy, in one run.

    python bench/overhead/run.py [--duration 8] [--warmup 3] [--concurrency 1,16,64]
                                 [--modes non-stream,stream] [--skip-litellm] [--skip-gateway]
                                 [--tracing] [--baseline-ref REF]

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
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
from procs import (  # noqa: E402
    CLK_TCK,
    Procs,
    children_ticks,
    free_port,
    group_ticks,
    system_ticks,
    wait_port,
)
from report import (  # noqa: E402
    BODY_BYTES,
    Point,
    build_report,
    fmt,
    gateway_version,
    loadavg,
    machine_note,
    tool_version,
)
from targets import (  # noqa: E402
    LABELS,
    MODELS,
    Target,
    check_with_sdk,
    checkout,
    start_gateway,
    start_litellm,
    start_otlp_sink,
)

# --------------------------------------------------------------------------- load


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
        "--baseline-ref",
        default="",
        help="also measure the gateway as of this git commit (a worktree of it, same venv), "
        "side by side: the before/after of a change",
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
            if args.baseline_ref:
                source = checkout(args.baseline_ref, tmp / "baseline-src")
                meta["labels"]["baseline"] = f"gateway @ {args.baseline_ref}"
                targets.append(start_gateway(args, tmp, procs, up_port, "baseline", source=source))
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
