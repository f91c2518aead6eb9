"""A fake Vertex AI and Google token service: one real HTTP server on 127.0.0.1.

``POST /token`` is the OAuth token endpoint a service account's ``token_uri`` names: it checks
the JWT assertion google-auth signs (RS256, with the public half of the key `service_account`
wrote, ``aud`` Google's token endpoint as google-auth always writes it, whatever the
``token_uri``, and the cloud-platform scope) and issues ``ya29.fake-<n>`` tokens that
last `FakeVertex.expires_in` seconds. Every Vertex route checks ``Authorization: Bearer`` against
the tokens issued and not revoked (`FakeVertex.revoke`), else answers Google's 401.

Routes: ``/v1beta1/projects/P/locations/L/endpoints/openapi/chat/completions`` is answered by
`tests.fake_upstream.FakeUpstream` (OpenAI's wire format; the model must be ``google/...``);
``/v1/projects/P/locations/L/publishers/anthropic/models/M:rawPredict`` and ``:streamRawPredict``
by `tests.fakes.anthropic.FakeAnthropic` in its Vertex mode (the verb must match ``stream``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from tests.fake_upstream import FakeUpstream
from tests.fakes.anthropic import FakeAnthropic, read_body, send_json
from tests.servers import Served, read_headers
from tests.servers import read_body as read_raw_body

Send = Any
Receive = Any
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
PROJECT, LOCATION = "gw-project", "us-east5"
_PREFIX = f"/projects/{PROJECT}/locations/{LOCATION}"
_GEMINI = f"/v1beta1{_PREFIX}/endpoints/openapi/chat/completions"
_CLAUDE = re.compile(
    rf"^/v1{_PREFIX}/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)
_UNAUTHENTICATED = json.dumps(
    {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }
).encode()


@dataclass
class FakeVertex(Served):
    gemini: FakeUpstream = field(default_factory=lambda: FakeUpstream("gemini"))
    claude: FakeAnthropic = field(default_factory=lambda: FakeAnthropic("claude", vertex=True))
    expires_in: int = 3600
    tokens_issued: int = 0
    refused: int = 0
    """Vertex requests answered 401."""
    claude_models: list[str] = field(default_factory=list)
    _valid: set[str] = field(default_factory=set)
    _public_pem: bytes = b""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return self.url

    def reset(self) -> None:
        with self._lock:
            self.gemini.reset()
            self.claude.reset()
            self.claude_models.clear()
            self.tokens_issued = self.refused = 0
            self.expires_in = 3600

    def revoke(self) -> None:
        """Every token issued so far is refused from now on (a rotated key, a revoked token)."""
        with self._lock:
            self._valid.clear()

    def service_account(self, directory: Path) -> Path:
        """A service account key file with a fresh RSA key, whose ``token_uri`` is this fake."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        info = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "key-1",
            "private_key": private.decode(),
            "client_email": f"gateway@{PROJECT}.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "token_uri": f"{self.base_url}/token",
        }
        path = directory / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/token":
            await self._token(receive, send)
            return
        body = await read_body(receive)
        headers = read_headers(scope)
        with self._lock:
            allowed = headers.get("authorization", "").removeprefix("Bearer ") in self._valid
            self.refused += not allowed
        if not allowed:
            await send_json(send, 401, _UNAUTHENTICATED)
        elif path == _GEMINI and str(body.get("model", "")).startswith("google/"):
            await self.gemini._app(
                {**scope, "path": "/v1/chat/completions"}, _replay(body, receive), send
            )
        elif (found := _CLAUDE.match(path)) and (found[2] == "streamRawPredict") == bool(
            body.get("stream")
        ):
            with self._lock:
                self.claude_models.append(found[1])
            await self.claude.answer(path, headers, body, send)
        else:
            await send_json(send, 404, b'{"error": {"code": 404, "message": "not found"}}')

    async def _token(self, receive: Receive, send: Send) -> None:
        """Google's token endpoint for a service account's signed JWT."""
        raw = await read_raw_body(receive)
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        try:
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            claims = jwt.decode(
                form["assertion"], certs=self._public_pem, audience=GOOGLE_TOKEN_AUDIENCE
            )
            assert "cloud-platform" in claims["scope"]
        except (AssertionError, KeyError, ValueError) as exc:
            await send_json(
                send,
                400,
                json.dumps({"error": "invalid_grant", "error_description": str(exc)}).encode(),
            )
            return
        with self._lock:
            self.tokens_issued += 1
            token = f"ya29.fake-{self.tokens_issued}"
            self._valid.add(token)
            answer = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        await send_json(send, 200, json.dumps(answer).encode())


def _replay(body: dict[str, Any], receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` again (it was read to check the route), then what the
    connection gives (the disconnect a fake upstream watches for)."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()  # type: ignore[no-any-return]
        sent = True
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    return replayed
