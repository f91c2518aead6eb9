"""The processes a reliability run needs, each on a free 127.0.0.1 port in its own process group
(stopped at the end by `Procs`, and dying with the bench): redis-server, the fault-injecting
upstream, gateways (one policy per run, written here), and nginx as a round-robin load
balancer. Process handling and CPU accounting come from bench/overhead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.append(str(REPO / "bench" / "overhead"))  # after ours: both have report.py
import upstream as nginx_upstream  # noqa: E402
from procs import Procs, free_port, log_tail, wait_port  # noqa: E402

TENANT_KEY = "sk-reliability-tenant-0001"
ADMIN_KEY = "sk-reliability-admin-00001"
KEYS = {name: f"sk-reliability-{name}-key-0001" for name in ("rl", "cc", "tpm", "bud")}
"""Keys of the tenants with limits (bench/reliability replicas): env BENCH_KEY_<NAME>."""
GATEWAY = REPO / ".venv" / "bin" / "gateway"

__all__ = ["Procs", "free_port", "log_tail", "nginx_upstream", "wait_port"]


@dataclass
class Gateway:
    name: str
    port: int
    proc: subprocess.Popen[Any]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def rss_mib(pgid: int) -> float:
    """Resident memory of a process group, MiB, from /proc/<pid>/status."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{name}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def start_redis(
    procs: Procs, tmp: Path, port: int | None = None, wait: bool = True
) -> tuple[subprocess.Popen[Any], int]:
    """redis-server with an fsync-always append-only file, so that a SIGKILL loses no
    acknowledged write (the ledger lives in it) and a restart on the same port finds it all.

    Call it from the main thread: the child dies with the thread that started it
    (PR_SET_PDEATHSIG), so one started from a worker thread would die with that thread."""
    port = port or free_port()
    data = tmp / "redis"
    data.mkdir(exist_ok=True)
    cmd = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
    cmd += ["--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"]
    log = tmp / "redis.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=nginx_upstream.die_with_parent,
        )
    procs.add(proc)
    if wait:
        wait_port(port, proc, 20, "redis-server", log)
    return proc, port


def kill9(proc: subprocess.Popen[Any]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def start_upstream(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    py = REPO / ".venv" / "bin" / "python"
    cmd = [str(py), str(HERE / "faulty_upstream.py"), "--port", str(port)]
    log = tmp / "upstream.log"
    proc = procs.start(cmd, log, env=child_env())
    wait_port(port, proc, 30, "faulty upstream", log)
    return proc, f"http://127.0.0.1:{port}"


def control(up: str, **kw: Any) -> None:
    req = urllib.request.Request(
        up + "/control", data=json.dumps(kw).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=5).read()


def upstream_stats(up: str) -> dict[str, Any]:
    with urllib.request.urlopen(up + "/stats", timeout=5) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def child_env(**extra: str) -> dict[str, str]:
    """The environment without GATEWAY_* settings or a PYTHONPATH (a plotting library added
    for the bench must not shadow the gateway's packages)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.pop("PYTHONPATH", None)
    keys = {f"BENCH_KEY_{name.upper()}": key for name, key in KEYS.items()}
    return env | {"BENCH_TENANT_KEY": TENANT_KEY, "BENCH_ADMIN_KEY": ADMIN_KEY} | keys | extra


def start_gateway(
    procs: Procs,
    tmp: Path,
    name: str,
    policy_text: str,
    redis_url: str | None = None,
    log_level: str = "warning",
    ledger_url: str | None = None,
) -> Gateway:
    folder = tmp / name  # its own folder: the gateway watches its policy's folder
    folder.mkdir()
    policy = folder / "policy.yaml"
    policy.write_text(policy_text)
    port = free_port()
    cmd = [str(GATEWAY), "serve", "--policy", str(policy), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", log_level]
    env = child_env(GATEWAY_DATA_DIR=str(tmp / f"{name}-data"), GATEWAY_REPLICA_ID=name)
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    if ledger_url:
        env["GATEWAY_LEDGER_URL"] = ledger_url
    log = tmp / f"{name}.log"
    proc = procs.start(cmd, log, cwd=tmp, env=env)
    return Gateway(name, port, proc, log)


def wait_ready(gw: Gateway, timeout: float) -> None:
    """Until a real chat answers 200 (the semantic cache's embedder loads before that)."""
    wait_port(gw.port, gw.proc, timeout, gw.name, gw.log)
    body = json.dumps(
        {"model": "mock", "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 8}
    ).encode()
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise SystemExit(f"{gw.name} exited:\n{log_tail(gw.log)}")
        req = urllib.request.Request(
            gw.url + "/v1/chat/completions",
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {TENANT_KEY}",
                "Cache-Control": "no-store",
                "x-gateway-tags": "run=ready",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = repr(e)
        time.sleep(0.5)
    raise SystemExit(f"{gw.name} not ready in {timeout:.0f}s ({last}):\n{log_tail(gw.log)}")


def cost_report(base: str, **query: str) -> dict[str, Any]:
    """``GET /admin/reports/cost`` as JSON, with the admin key."""
    qs = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in query.items())
    req = urllib.request.Request(
        f"{base}/admin/reports/cost?format=json&{qs}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def start_balancer(procs: Procs, tmp: Path, backends: list[int]) -> tuple[Any, int]:
    """nginx, round robin over the gateways, keep-alive both sides, no buffering (streams),
    and the backend that answered in ``x-replica``."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = tmp / "lb"
    prefix.mkdir()
    port = free_port()
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backends)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream gateways {{
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 120s;
            proxy_next_upstream off;
            add_header x-replica $upstream_addr always;
        }}
    }}
}}
"""
    )
    cmd = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = procs.start(cmd, prefix / "out.log")
    wait_port(port, proc, 10, "nginx load balancer", prefix / "error.log")
    return proc, port
