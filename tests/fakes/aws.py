"""What the fake AWS servers share: the SigV4 check and the binary event-stream encoding.

The signature is recomputed from the request as received (method, raw path, the headers the
client says it signed, the body) with botocore's own signer and the fake's secret key, as AWS
does; the frames are written per AWS's event-stream spec (prelude, headers, payload, CRC32s),
since botocore has a decoder only.
"""

from __future__ import annotations

import binascii
import json
import re
import struct
import textwrap
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.providers import AttemptFailed, Provider
from tests.conftest import ADMIN_KEY, TENANT_KEY
from tests.servers import ServerThread

ACCESS_KEY = "AKIAFAKEFAKEFAKE0001"
SECRET_KEY = "fake/secret/key/for/tests/only/0000000000"
REGION = "us-east-1"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


Request = TypeVar("Request")
Fault = TypeVar("Fault")


class FakeAwsServer(Generic[Request, Fault]):
    """A fake AWS service on a real HTTP server: what it received, and the faults a test
    scripted for the next requests (in order; later ones are answered normally)."""

    def __init__(self, no_fault: Fault) -> None:
        self.requests: list[Request] = []
        self.server: ServerThread | None = None
        self._no_fault = no_fault
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def received(self, request: Request) -> Fault:
        """Record ``request``; the fault it meets."""
        with self._lock:
            self.requests.append(request)
            return self._faults.popleft() if self._faults else self._no_fault

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> Self:
        self.server = ServerThread(self._app, lifespan="off").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Signed:
    """What a request's signature says, and whether it holds."""

    ok: bool
    signed_headers: tuple[str, ...]
    problem: str = ""


def check_signature(
    scope: dict[str, Any], headers: dict[str, str], body: bytes, service: str
) -> Signed:
    """Recompute the request's SigV4 signature with botocore's signer and compare."""
    found = _AUTH.fullmatch(headers.get("authorization", ""))
    if found is None:
        return Signed(False, (), "no SigV4 authorization header")
    access_key, day, region, signed_service, names, signature = found.groups()
    signed = tuple(names.split(";"))
    if (access_key, region, signed_service) != (ACCESS_KEY, REGION, service):
        return Signed(False, signed, f"scope {access_key}/{region}/{signed_service}")
    if not headers.get("x-amz-date", "").startswith(day):
        return Signed(False, signed, "x-amz-date is not the credential's day")
    query = scope.get("query_string", b"").decode()
    url = f"http://{headers['host']}{scope['raw_path'].decode()}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method=scope["method"], url=url, data=body, headers={n: headers[n] for n in signed}
    )
    request.context["timestamp"] = headers["x-amz-date"]
    token = headers.get("x-amz-security-token")
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), service, REGION)
    expected = auth.signature(
        auth.string_to_sign(request, auth.canonical_request(request)), request
    )
    if expected != signature:
        return Signed(False, signed, "the signature does not match")
    return Signed(True, signed)


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: string headers, the payload, both CRC32s."""
    encoded = b"".join(
        struct.pack("!B", len(k)) + k.encode() + struct.pack("!BH", 7, len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


def event(kind: str, payload: dict[str, Any] | bytes) -> bytes:
    """An event frame (``:event-type`` ``kind``); a dict payload is sent as JSON."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, raw)


def exception(kind: str, message: str) -> bytes:
    """An exception frame, as AWS sends a failure in the middle of a stream."""
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps({"message": message}).encode())


async def read_body(receive: Any) -> bytes:
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            return raw


async def send_json(send: Any, status: int, body: dict[str, Any], error_type: str = "") -> None:
    headers = [(b"content-type", b"application/json")]
    if error_type:
        headers.append((b"x-amzn-errortype", f"{error_type}:http://internal.amazon.com/".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def send_frames(send: Any, frames: list[bytes], split: int = 0) -> None:
    """A 200 event stream; with ``split``, each frame goes out in two writes cut ``split``
    bytes in (frames cut anywhere must still be read whole)."""
    headers = [(b"content-type", b"application/vnd.amazon.eventstream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for data in frames:
        cut = min(split, len(data))
        for piece in (data[:cut], data[cut:]) if cut else (data,):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


_TRIES = (
    "fallbacks: [backup]\n"
    "timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}\n"
    "retries: {max_attempts: 2, budget_s: 5, backoff_initial_s: 0.01, backoff_max_s: 0.05}\n"
)


def policy_with_backup(name: str, entry: str, backup_url: str) -> str:
    """A gateway policy whose route goes to the model ``name`` (``entry``: its own YAML keys),
    tried twice, then falling back to ``backup``, an OpenAI-compatible upstream at
    ``backup_url``; tenant ``team-a`` holds ``TENANT_KEY``."""
    own = textwrap.indent(textwrap.dedent(entry).strip() + "\n" + _TRIES, " " * 4)
    return f"version: 1\nmodels:\n  {name}:\n{own}" + textwrap.dedent(f"""\
          backup:
            provider: openai_compatible
            base_url: {backup_url}
            model: upstream-backup
            price: {{input_per_mtok: 0.10, output_per_mtok: 0.20}}
        baseline_model: {name}
        routes:
          - {{name: default, to: {name}}}
        tenants:
          team-a: {{api_keys: ["{TENANT_KEY}"]}}
        admin: {{api_keys: ["{ADMIN_KEY}"]}}
        """)


async def streamed(
    provider: Provider, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], AttemptFailed | None]:
    """One streamed attempt's chat chunks, decoded, and the failure that ended it, if any;
    the provider is closed after."""
    got: list[dict[str, Any]] = []
    try:
        async for batch in provider.stream(body):
            got += [json.loads(c) for c in batch]
    except AttemptFailed as exc:
        return got, exc
    finally:
        await provider.aclose()
    return got, None
