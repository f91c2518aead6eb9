"""Fake Azure services, real HTTP servers on 127.0.0.1: Azure OpenAI, an Azure ML endpoint, and
the managed identity token endpoint that azure-identity's real ``DefaultAzureCredential`` asks.

Each checks what it receives the way the service does (path, ``api-version``, the ``api-key``
header or a bearer token that the fake identity endpoint issued for the service's own scope,
the ``azureml-model-deployment`` header) and answers with Azure's errors and wire format:
Azure OpenAI's streams open with a ``prompt_filter_results`` chunk whose ``choices`` are empty,
carry ``content_filter_results`` in their choices, and a content-filter-only chunk without
``delta`` before the end. The answers are `tests.fake_upstream`'s (deterministic text, tool
calls, usage), so tests can tell which server answered what.

The identity endpoint is App Service's (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``), which
serves plain HTTP on the local machine in production too, so azure-identity's own classes talk
to it unchanged.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from urllib.request import Request, urlopen

import pytest
from azure.core.credentials import AccessTokenInfo

from tests.fake_upstream import answer_text, chunks, completion, embeddings
from tests.servers import ScriptedServer, Served, read_body, read_headers

Send = Any
Receive = Any
FIXTURES = Path(__file__).parent / "azure_fixtures"
OTHER_AZURE_SOURCES = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                       "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT",
                       "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT")  # fmt: skip
"""What would make DefaultAzureCredential take another source than the managed identity."""
FILTER = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
PROMPT_FILTER_CHUNK = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                **FILTER,
                "jailbreak": {"filtered": False, "detected": False},
            },
        }
    ],
}
FILTERED_WORD = "forbidden-topic"
"""A prompt with this word is refused by the fake's prompt filter, as Azure refuses one."""
PROMPT_FILTERED = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
        "content management policy. Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {**FILTER, "violence": {"filtered": True, "severity": "high"}},
        },
    }
}
FILTER_ONLY_CHUNK = {
    "choices": [
        {
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 40},
            "content_filter_results": FILTER,
            "finish_reason": None,
            "index": 0,
        }
    ],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
}


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _head(scope: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A request's headers (lower-case names) and its query parameters."""
    headers = read_headers(scope)
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    return headers, query


class FakeIdentity(Served):
    """App Service's managed identity endpoint: ``GET ?api-version=2019-08-01&resource=...``
    with the ``X-IDENTITY-HEADER`` secret; each call issues a new token for that resource."""

    SECRET = "fake-identity-header-secret"

    def __init__(self, lifetime_s: int = 3600) -> None:
        self.lifetime_s = lifetime_s
        self.issued: dict[str, str] = {}
        """Token -> the resource it was issued for."""
        self._numbers = itertools.count(1)

    def env(self) -> dict[str, str]:
        """The environment that points azure-identity's managed identity here."""
        return {"IDENTITY_ENDPOINT": f"{self.url}/msi/token", "IDENTITY_HEADER": self.SECRET}

    def use(self, monkeypatch: pytest.MonkeyPatch) -> FakeIdentity:
        """Make this the identity ``DefaultAzureCredential`` finds (the other sources of its
        chain cleared from the environment), with no token issued yet."""
        for name in OTHER_AZURE_SOURCES:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env().items():
            monkeypatch.setenv(name, value)
        self.issued.clear()
        return self

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers, query = _head(scope)
        if (
            scope["path"] != "/msi/token"
            or headers.get("x-identity-header") != self.SECRET
            or query.get("api-version") != "2019-08-01"
        ):
            await _send(send, 400, {"error": "invalid_request"})
            return
        token = f"entra-{next(self._numbers)}"
        self.issued[token] = query["resource"]
        expires_on = int(time.time()) + self.lifetime_s
        answer = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": query["resource"],
            "token_type": "Bearer",
        }
        await _send(send, 200, answer)


@dataclass
class FakeAzure(ScriptedServer[Received, tuple[int, dict[str, str]] | None]):
    """What the two fake services share: recording, scripted failures, key or token checks."""

    name: str
    key: str
    identity: FakeIdentity | None = None
    resource: str = ""
    """The resource (scope without ``/.default``) a token must be issued for."""
    revoked: set[str] = field(default_factory=set)
    """Tokens answered with a 401 although issued."""

    def __post_init__(self) -> None:
        super().__init__(None)

    def script(self, *statuses: int, retry_after: str | None = None) -> None:
        """The next requests are answered with these statuses (Azure's error bodies)."""
        headers = {"retry-after": retry_after} if retry_after else {}
        super().script(*((status, headers) for status in statuses))

    def _authorized(self, headers: dict[str, str]) -> bool:
        """The key in the service's header, or a live token for this service."""
        raise NotImplementedError

    def _token_ok(self, authorization: str | None) -> bool:
        if self.identity is None or not authorization or not authorization.startswith("Bearer "):
            return False
        token = authorization.removeprefix("Bearer ")
        return self.identity.issued.get(token) == self.resource and token not in self.revoked

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        headers, query = _head(scope)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = Received(scope["path"], query, headers, body)
        fault = self.received(received)
        if not self._authorized(headers):
            await _send(send, 401, self._error(401, "Access denied due to invalid credentials."))
        elif fault is not None:
            status, extra = fault
            await _send(send, status, self._error(status, f"{self.name} injected {status}"), extra)
        else:
            await self._answer(received, send)

    def _error(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": str(status), "message": message}}

    async def _answer(self, request: Received, send: Send) -> None:
        raise NotImplementedError


@dataclass
class FakeAzureOpenAI(FakeAzure):
    """``/openai/deployments/{deployment}/...?api-version=`` and ``/openai/v1/...``."""

    deployments: tuple[str, ...] = ("gpt-4o-deployment",)
    api_versions: tuple[str, ...] = ("2024-10-21",)
    model: str = "gpt-4o-2024-08-06"
    """The model Azure names in its answers (not the deployment's name)."""
    replay: deque[str] = field(default_factory=deque)
    """Fixture files (in azure_fixtures/) to stream, verbatim, for the next streamed requests."""
    resource: str = "https://cognitiveservices.azure.com"

    def _authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("api-key") == self.key or self._token_ok(headers.get("authorization"))

    async def _answer(self, request: Received, send: Send) -> None:
        path, query, body = request.path, request.query, request.body
        if path.endswith("/chat/completions"):
            head, operation = path.removesuffix("/chat/completions"), "chat"
        else:
            head, _, operation = path.rpartition("/")
        parts = head.strip("/").split("/")
        if parts == ["openai", "v1"]:
            deployment, version_ok = (body or {}).get("model"), "api-version" not in query
        elif parts[:2] == ["openai", "deployments"] and len(parts) == 3:
            deployment = parts[2]
            version_ok = query.get("api-version") in self.api_versions
        else:
            await _send(send, 404, self._error(404, "Resource not found"))
            return
        if not version_ok:
            await _send(send, 400, self._error(400, "API version not supported"))
            return
        if deployment not in self.deployments or operation not in ("chat", "embeddings"):
            not_found = {"code": "DeploymentNotFound", "message": "The API deployment for this "
                         "resource does not exist."}  # fmt: skip
            await _send(send, 404, {"error": not_found})
            return
        if operation == "embeddings":
            await _send(send, 200, {**embeddings(body), "model": "text-embedding-3-small"})
        elif FILTERED_WORD in json.dumps(body.get("messages")):
            await _send(send, 400, PROMPT_FILTERED)
        elif body.get("stream"):
            await _stream(send, self._events(body))
        else:
            await _send(send, 200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = completion(self.name, body)
        answer.pop("service_tier")
        answer["model"] = self.model
        answer["prompt_filter_results"] = PROMPT_FILTER_CHUNK["prompt_filter_results"]
        answer["choices"] = [{**c, "content_filter_results": FILTER} for c in answer["choices"]]
        return answer

    def _events(self, body: dict[str, Any]) -> list[bytes]:
        if self.replay:
            raw = (FIXTURES / self.replay.popleft()).read_bytes()
            return [raw[i : i + 37] for i in range(0, len(raw), 37)]  # lines split anywhere
        return azure_events(self.name, self.model, body)


def azure_events(name: str, model: str, body: dict[str, Any]) -> list[bytes]:
    """Azure's stream of `fake_upstream`'s answer: the prompt filter chunk, the answer's chunks
    with filter results in their choices, a filter-only chunk before the finish, the usage
    chunk, ``[DONE]``."""
    events = [json.loads(c.removeprefix(b"data: ")) for c in chunks(name, body)[:-1]]
    for event in events:
        event.pop("service_tier")
        event["model"] = model
        event["choices"] = [{**c, "content_filter_results": {}} for c in event["choices"]]
    finish = next(i for i, e in enumerate(events) if e["choices"][0]["finish_reason"])
    events[finish:finish] = [FILTER_ONLY_CHUNK]
    events.insert(0, PROMPT_FILTER_CHUNK)
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


@dataclass
class FakeAzureML(FakeAzure):
    """An online endpoint's ``/score``, whose container speaks OpenAI's chat or TGI's generate
    API (``container``); ``deployment``, when set, must come as ``azureml-model-deployment``."""

    container: str = "openai"
    deployment: str | None = None
    resource: str = "https://ml.azure.com"

    def _authorized(self, headers: dict[str, str]) -> bool:
        authorization = headers.get("authorization")
        return authorization == f"Bearer {self.key}" or self._token_ok(authorization)

    async def _answer(self, request: Received, send: Send) -> None:
        path, headers, body = request.path, request.headers, request.body
        if path != "/score":
            await _send(send, 404, {"message": f"no route {path}"})
        elif self.deployment is not None and headers.get("azureml-model-deployment") != (
            self.deployment
        ):
            await _send(send, 404, {"message": "deployment not found"})
        elif self.container == "openai":
            if body.get("stream"):
                await _stream(send, azure_events(self.name, "served-model", body))
            else:
                await _send(send, 200, completion(self.name, body))
        elif not isinstance(body.get("inputs"), str) or "messages" in body:
            await _send(send, 422, {"error": "Input validation error", "error_type": "validation"})
        elif body.get("stream"):
            await _stream(send, tgi_stream(self.name, body))
        else:
            await _send(send, 200, [tgi_generated(self.name, body)])


def tgi_text(name: str, body: dict[str, Any]) -> str:
    """The fake's answer to a TGI prompt: what `fake_upstream` says to its last user turn."""
    last = body["inputs"].rsplit("User: ", 1)[-1].removesuffix("\n\nAssistant:")
    return answer_text(name, {"messages": [{"role": "user", "content": last}]})


def tgi_generated(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """TGI's answer: the text, and the details the gateway asked for (prefill: the prompt's
    words as tokens)."""
    text = tgi_text(name, body)
    details: dict[str, Any] = {
        "finish_reason": "eos_token",
        "generated_tokens": len(text.split()) + 1,  # the end-of-sequence token counts
        "seed": None,
    }
    if body["parameters"].get("decoder_input_details"):
        details["prefill"] = [{"id": i, "text": w, "logprob": None}
                              for i, w in enumerate(body["inputs"].split())]  # fmt: skip
    return {"generated_text": text, "details": details}


def tgi_stream(name: str, body: dict[str, Any]) -> list[bytes]:
    """TGI's stream lines: a token per word, then the end-of-sequence token with details."""
    words = tgi_text(name, body).split(" ")
    lines = []
    for i, word in enumerate(words):
        token = {"id": i, "text": word if i == 0 else f" {word}", "logprob": -0.5, "special": False}
        line = {"index": i + 1, "token": token, "top_tokens": None, "generated_text": None,
                "details": None}  # fmt: skip
        lines.append(line)
    eos = {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}
    details = {"finish_reason": "eos_token", "generated_tokens": len(words) + 1, "seed": None}
    lines.append({"index": len(words) + 1, "token": eos, "top_tokens": None,
                  "generated_text": " ".join(words), "details": details})  # fmt: skip
    return [f"data:{json.dumps(line)}\n\n".encode() for line in lines]


async def _stream(send: Send, events: list[bytes]) -> None:
    head = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send(send: Send, status: int, answer: Any, extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


class UncachedCredential:
    """A credential that asks the fake identity endpoint for a new token on every call (no
    cache, unlike azure-identity's MSAL-backed ones), so a forced refresh shows as a new
    token; it speaks azure-core's ``SupportsTokenInfo`` as `EntraToken` expects."""

    def __init__(self, identity: FakeIdentity) -> None:
        self._identity = identity
        self.calls = 0

    def get_token_info(self, *scopes: str) -> AccessTokenInfo:
        self.calls += 1
        env = self._identity.env()
        resource = scopes[0].removesuffix("/.default")
        query = urlencode({"api-version": "2019-08-01", "resource": resource})
        request = Request(f"{env['IDENTITY_ENDPOINT']}?{query}")
        request.add_header("X-IDENTITY-HEADER", env["IDENTITY_HEADER"])
        with urlopen(request, timeout=5) as response:
            answer = json.load(response)
        return AccessTokenInfo(answer["access_token"], int(answer["expires_on"]))

    def close(self) -> None:
        pass
