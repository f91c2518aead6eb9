"""bench/overhead's processes: started in their own process groups, stopped in reverse order,
waited for, and their CPU time read from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import upstream

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
