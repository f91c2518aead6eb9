#!/usr/bin/env python3
"""Fuzz a running gateway from its own /openapi.json with schemathesis; fail on any 5xx.

    .venv/bin/python bench/fuzz/run.py [--requests 10000] [--examples 100]
                                       [--chat-examples 2500] [--seed 0] [--no-redis]

Starts, on 127.0.0.1, the two fake upstreams of the tests (tests/fake_upstream.py) and a gateway
in front of them (tests/fuzz/harness.py: two tenants, an admin key, the exact cache on, the
server's gate in force), with a redis-server of its own for the exact cache and the ledger when
one is installed (else the in-process stores). Then rounds of fuzzing, a new seed each, until
``--requests`` requests were sent: every operation of the document in schemathesis' positive
and negative modes, ``--examples`` cases each (``--chat-examples`` for the chat door), with a
key drawn per request (the right one, another tenant's, the wrong kind, a made-up one, none).

Prints the counts (requests, statuses, per operation) and each kind of failure once, with a
curl line to reproduce it; exits 1 when there was a 5xx or any other failure (an error not in
OpenAI's shape, a broken stream, a response the document does not describe).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fuzz.harness import Tally, fuzz, gateway  # noqa: E402
from tests.servers import RedisProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="at least this many")
    parser.add_argument("--examples", type=int, default=100, help="per operation and mode")
    parser.add_argument("--chat-examples", type=int, default=2500, help="for the chat door")
    parser.add_argument("--seed", type=int, default=0, help="of the first round")
    parser.add_argument("--no-redis", action="store_true", help="the in-process stores")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the gateway's unhandled errors still show

    started = time.monotonic()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="gateway-fuzz-") as tmp:
        redis = None
        if not args.no_redis and shutil.which("redis-server"):
            (Path(tmp) / "redis").mkdir()
            redis = RedisProcess(Path(tmp) / "redis").start()
        try:
            with gateway(Path(tmp), redis.url if redis else None) as url:
                print(f"gateway {url}, exact cache in {'redis' if redis else 'memory'}", flush=True)
                round_seed = args.seed
                while tally.requests < args.requests:
                    print(f"round, seed {round_seed}", flush=True)
                    fuzz(
                        url,
                        examples=args.examples,
                        chat_examples=args.chat_examples,
                        seed_value=round_seed,
                        tally=tally,
                        progress=lambda line: print(f"  {line}", flush=True),
                    )
                    round_seed += 1
        finally:
            if redis is not None:
                redis.stop()

    elapsed = time.monotonic() - started
    print(f"\n{dt.date.today().isoformat()}, {elapsed:.0f} s")
    print(tally.summary())
    kinds = Counter((f.operation, f.mode, f.status, f.problem[:120]) for f in tally.failures)
    shown: set[tuple[str, str, int, str]] = set()
    for failure in tally.failures:
        kind = (failure.operation, failure.mode, failure.status, failure.problem[:120])
        if kind not in shown:
            shown.add(kind)
            print(f"\n({kinds[kind]}x) {failure}")
    return 1 if tally.server_errors or tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
