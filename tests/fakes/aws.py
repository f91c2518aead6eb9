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
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.providers import AttemptFailed, Provider

ACCESS_KEY = "AKIAFAKEFAKEFAKE0001"
SECRET_KEY = "fake/secret/key/for/tests/only/0000000000"
REGION = "us-east-1"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


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
