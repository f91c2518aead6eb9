"""Time to first byte of a stream, and to its end, one request at a time over one keep-alive
connection (a blocking socket, so the client adds next to nothing).

The first byte is the first byte of the first ``data:`` event, not of the response head: a
proxy that sent its head early but held the events back would not look fast here.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Times:
    first_ms: float
    total_ms: float


def probe(base_url: str, model: str, headers: dict[str, str], requests: int, same: bool) -> Times:
    """Medians over ``requests`` streamed requests (after 10 unmeasured ones); ``same``: one
    body each time (exact-cache hits on the gateway), else a new one each time."""
    url = urlsplit(base_url)
    firsts, totals = [], []
    with socket.create_connection((url.hostname, url.port or 80)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(requests + 10):
            body = json.dumps(
                {
                    "model": model,
                    "messages": [
                        {
                            "role": "user",
                            "content": f"ttfb {0 if same else i} {time.time() if not same else ''}",
                        }
                    ],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ).encode()
            head = [f"POST {url.path}/chat/completions HTTP/1.1", f"Host: {url.netloc}"]
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            start = time.perf_counter()
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            first, total = _read_response(sock, start)
            if i >= 10:
                firsts.append(first)
                totals.append(total)
    return Times(statistics.median(firsts) * 1000, statistics.median(totals) * 1000)


def _read_response(sock: socket.socket, start: float) -> tuple[float, float]:
    """Seconds to the first ``data:`` byte and to the end (Content-Length or chunked)."""
    buf, first = b"", None
    while b"\r\n\r\n" not in buf:
        buf += _recv(sock)
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"not a 200: {head[:200]!r}")
    lowered = head.lower()
    length = None
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while True:
        if first is None and b"data:" in body:
            first = time.perf_counter() - start
        if length is not None and len(body) >= length:
            break
        if length is None and body.endswith(b"\r\n0\r\n\r\n"):
            break
        body += _recv(sock)
    assert first is not None
    return first, time.perf_counter() - start


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise SystemExit("the server closed the connection")
    return data
