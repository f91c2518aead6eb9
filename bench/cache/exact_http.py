"""Exact-cache hits end to end through HTTP: the gateway with its in-process store, the gateway
with Redis, and LiteLLM's proxy with its in-memory cache, in one run.

    python bench/cache/exact_http.py [--duration 8] [--concurrency 1,32] [--skip-litellm]
                                     [--redis redis://127.0.0.1:6379/0]

The machinery is bench/overhead's (nginx upstream, wrk, process groups, CPU accounting); here
wrk sends one body over and over (load.lua with WRK_SAME_BODY=1), so after the first request
every answer comes from the cache. Each target is checked to really answer from its cache: the
gateway's ``/metrics`` must count (nearly) every request as ``cache="exact"``, and the upstream
must see no more than a handful of requests. Direct nginx is the floor. Prints a markdown table.
Targets (issue 4): exact hit p50 <= 0.7 ms in-process and <= 1.2 ms with Redis.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "overhead"))
import run as overhead  # noqa: E402
import upstream  # noqa: E402

TARGETS_MS = {"gateway": 0.7, "gateway-redis": 1.2}


def exact_share(base_url: str) -> float:
    """The share of the gateway's answered requests that the exact cache served."""
    text = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=5).read()
    counts = {"exact": 0.0, "all": 0.0}
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "gateway_requests":
            for sample in family.samples:
                if sample.name == "gateway_requests_total":
                    counts["all"] += sample.value
                    if sample.labels.get("cache") == "exact":
                        counts["exact"] += sample.value
    return counts["exact"] / counts["all"] if counts["all"] else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", default="8")
    ap.add_argument("--warmup", default="2")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--modes", default="non-stream,stream")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--skip-litellm", action="store_true")
    mine = ap.parse_args()
    timing = ["--duration", mine.duration, "--warmup", mine.warmup]
    load = ["--concurrency", mine.concurrency, "--modes", mine.modes]
    args = overhead.parse_args([*timing, *load, "--gateway-args", "--log-level warning"])
    os.environ["WRK_SAME_BODY"] = "1"
    overhead.LABELS |= {
        "gateway-redis": "gateway, Redis store",
        "litellm-cache": "LiteLLM, in-memory cache",
    }
    procs, tmp = overhead.Procs(), Path(tempfile.mkdtemp(prefix="bench-exact-"))
    try:
        up_port = overhead.free_port()
        with (tmp / "nginx.out").open("wb") as out:
            nginx = procs.add(upstream.start_nginx(tmp, up_port, out))
        overhead.wait_port(up_port, nginx, 10, "nginx", tmp / "nginx" / "error.log")
        up = f"http://127.0.0.1:{up_port}"
        urls = {"non-stream": f"{up}/v1", "stream": f"{up}/stream/v1"}
        targets = [overhead.Target("direct", overhead.LABELS["direct"], urls, nginx)]
        targets.append(overhead.start_gateway(args, tmp, procs, up_port))
        plain_cmd = args.gateway_cmd
        args.gateway_cmd = f"env GATEWAY_REDIS_URL={shlex.quote(mine.redis)} {plain_cmd}"
        targets.append(overhead.start_gateway(args, tmp, procs, up_port, "gateway-redis"))
        args.gateway_cmd = plain_cmd
        if not mine.skip_litellm:
            litellm = overhead.start_litellm(args, tmp, procs, up_port, cache=True)
            litellm.name, litellm.label = "litellm-cache", overhead.LABELS["litellm-cache"]
            targets.append(litellm)
        pgids = {t.name: t.proc.pid for t in targets}
        rows = []
        for mode in args.modes:
            for c in args.concurrency:
                for target in targets:
                    point = overhead.measure(target, mode, c, args, pgids)
                    share = exact_share(target.urls[mode]) if "gateway" in target.name else None
                    rows.append((point, target.label, share))
                    print(
                        f"[bench] {mode} c={c} {target.label}: p50 {point.p50_ms:.3f} ms "
                        f"p99 {point.p99_ms:.3f} ms {point.rps:.0f} rps "
                        f"others {overhead.fmt(point.others_cpu_pct, 0)}%",
                        file=sys.stderr,
                    )
        print(table(rows, overhead.loadavg()))
    finally:
        procs.stop_all()
    return 0


def table(rows: list[tuple[overhead.Point, str, float | None]], load: str) -> str:
    lines = [
        f"load average after: {load}",
        "",
        "| mode | c | target | RPS | p50 ms | p99 ms | exact-hit share | target p50 | "
        "others' CPU % |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for point, label, share in rows:
        goal = TARGETS_MS.get(point.target) if point.concurrency == 1 else None
        lines.append(
            f"| {point.mode} | {point.concurrency} | {label} | {point.rps:,.0f} "
            f"| {point.p50_ms:.3f} | {point.p99_ms:.3f} "
            f"| {'' if share is None else f'{share:.4f}'} "
            f"| {'' if goal is None else f'<= {goal} ms'} "
            f"| {overhead.fmt(point.others_cpu_pct, 0)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
