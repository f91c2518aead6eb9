#!/usr/bin/env python3
"""Reliability proof (issue 13, "Hardening"): soak, faults during load, two replicas.

    python bench/reliability/run.py soak [--minutes 10] [--load 0.8]
    python bench/reliability/run.py faults [--phase-seconds 8] [--rate 40]
    python bench/reliability/run.py replicas [--ledger-server postgresql://postgres@127.0.0.1:5432]

Each part starts what it needs on free 127.0.0.1 ports (redis-server, nginx, the gateway from
this checkout, a fault-injecting upstream), prints a markdown table and PASS/FAIL lines, writes
the table to bench/reliability/<part>.md and exits 1 when a check fails. Everything it starts is
stopped at the end, also on Ctrl-C or SIGTERM (and dies with it on SIGKILL).

Needs Debian's wrk, nginx and redis-server, and the project venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PY = HERE.parent.parent / ".venv" / "bin" / "python"

try:
    import aiohttp  # noqa: F401
except ImportError:  # pragma: no cover - depends on how it is started
    if VENV_PY.exists() and Path(sys.executable).resolve() != VENV_PY.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), *sys.argv])
    raise SystemExit("run with the project venv's python (aiohttp, redis)") from None

sys.path.insert(0, str(HERE))
import stack  # noqa: E402
from report import finish, log  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and server logs")
    sub = ap.add_subparsers(dest="part", required=True)

    s = sub.add_parser("soak", help="N minutes at 80 %% of the measured max RPS")
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--load", type=float, default=0.8, help="share of max RPS (0.8)")
    s.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    s.add_argument("--max-seconds", type=float, default=5.0, help="max-RPS measurement (5 s)")
    s.add_argument("--plot", default=str(HERE / "soak.png"), help="PNG ('' for none)")

    f = sub.add_parser("faults", help="Redis and upstream faults, client disconnects, under load")
    f.add_argument("--phase-seconds", type=float, default=8.0, help="seconds per phase (8)")
    f.add_argument("--rate", type=float, default=40.0, help="requests per second (40)")
    f.add_argument("--share", type=float, default=0.5, help="requests a fault hits (0.5)")
    f.add_argument("--abandon", type=float, default=0.1, help="streams the client leaves (0.1)")

    r = sub.add_parser("replicas", help="two gateways behind nginx, sharing one Redis")
    r.add_argument("--rpm", type=int, default=120, help="the rate-limited tenant's RPM (120)")
    r.add_argument("--tpm", type=int, default=300, help="the token-limited tenant's TPM (300)")
    r.add_argument("--budget-usd", type=float, default=0.5, help="the budgeted tenant's day")
    r.add_argument(
        "--ledger-server",
        default=None,
        help="a PostgreSQL server URL (postgresql://postgres@127.0.0.1:5432): the replicas "
        "keep the ledger in a fresh database there instead of in Redis",
    )
    for p in (s, f, r):
        p.add_argument("--out", default=None, help="markdown file (default <part>.md here)")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = str(HERE / f"{a.part}.md")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx", "redis-server"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise SystemExit(f"{tool} is needed: apt-get install -y wrk nginx redis-server")

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-reliability-{args.part}-"))
    procs = stack.Procs()
    keep = args.keep_tmp
    try:
        if args.part == "soak":
            import soak

            md, checks = soak.run(args, tmp, procs)
        elif args.part == "faults":
            import faults

            md, checks = faults.run(args, tmp, procs)
        else:
            import replicas

            md, checks = replicas.run(args, tmp, procs)
        keep = keep or not checks.ok
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    except BaseException:
        keep = True
        raise
    finally:
        procs.stop_all()
        if keep:
            log(f"temp dir with configs and logs kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish(md, checks, args.out)


if __name__ == "__main__":
    sys.exit(main())
