"""bench/overhead's report: the results table, the targets' verdicts, the set-up notes."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import upstream

REPO = Path(__file__).resolve().parent.parent.parent
TARGET_ADDED_P50_MS = 1.0  # at concurrency 1
TARGET_ADDED_P99_MS = 3.0  # at concurrency 1
TARGET_RPS_RATIO = 30.0  # gateway max RPS / LiteLLM max RPS
TARGET_TRACING_P50_MS = 0.3
BODY_BYTES = 200


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
            for t in ("direct", "gateway", "baseline", "traced", "litellm"):
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
        g, t = by.get(("gateway", mode, 1)), by.get(("traced", mode, 1))
        if g and t:
            added = t.p50_ms - g.p50_ms
            out.append(
                (f"{mode}, c=1: tracing on adds ≤ {TARGET_TRACING_P50_MS:g} ms p50",
                 f"{added:.3f} ms",
                 verdict(g.valid and t.valid, added <= TARGET_TRACING_P50_MS))
            )  # fmt: skip
    for mode in args.modes:
        for c in args.concurrency:
            g, b = by.get(("gateway", mode, c)), by.get(("baseline", mode, c))
            if g and b and b.rps:
                out.append(
                    (f"{mode}, c={c}: this gateway against {args.baseline_ref} (before/after)",
                     f"{g.rps / b.rps:.3f}× RPS; p50 {g.p50_ms:.3f} vs {b.p50_ms:.3f} ms",
                     "–" if g.valid and b.valid else verdict(False, False))
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
