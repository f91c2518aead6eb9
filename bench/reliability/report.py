"""What every part of bench/reliability prints: a markdown table, PASS/FAIL lines, and the
header of the run (command, date, machine load)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Checks:
    """PASS/FAIL lines; the run fails when one fails."""

    lines: list[tuple[bool, str, str]] = field(default_factory=list)

    def add(self, ok: bool, what: str, measured: str) -> bool:
        self.lines.append((ok, what, measured))
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for ok, _, _ in self.lines)

    def markdown(self) -> str:
        rows = [[what, measured, "PASS" if ok else "**FAIL**"] for ok, what, measured in self.lines]
        return table(["check", "measured", "result"], rows, "ll")

    def text(self) -> str:
        return "\n".join(
            f"{'PASS' if ok else 'FAIL'}: {what} ({measured})" for ok, what, measured in self.lines
        )


def table(head: list[str], rows: list[list[str]], left: str = "l") -> str:
    """A markdown table; the first ``len(left)`` columns left-aligned, the rest right."""
    align = ["---" if i < len(left) else "---:" for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def header(part: str) -> str:
    cmd = shlex.join(["python", "bench/reliability/run.py", *sys.argv[1:]])
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"## bench/reliability: {part}\n\n    {cmd}\n\n"
        f"{now}, {os.cpu_count()} CPUs ({cpu}), load average before: {loadavg()}\n"
    )


def log(msg: str) -> None:
    print(f"[reliability] {msg}", file=sys.stderr, flush=True)


def ms(v: float | None, nd: int = 1) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def finish(md: str, checks: Checks, out: str | None) -> int:
    md = md + "\n\n" + checks.markdown() + f"\n\nload average after: {loadavg()}\n"
    print(md)
    print(checks.text())
    if out:
        Path(out).write_text(md)
        log(f"wrote {out}")
    return 0 if checks.ok else 1
