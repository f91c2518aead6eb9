"""``GET /openapi.json``: the gateway's HTTP API as an OpenAPI 3.1 document, written by hand.

Litestar's inference from the handlers cannot describe it: the chat door reads its body itself
(`gateway.pipeline.normalize`), so the request schema here is OpenAI's Chat Completions
request as OpenAI documents it (fields the gateway does not know pass through, so
``additionalProperties`` stays open), and every error is OpenAI's error object.

The document is public, as it describes the API and no data: it names no model, tenant, key,
path or version of the running policy (a client asks ``/v1/models`` for the models). It is
built once, at import, and served as the same bytes to everyone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get

JSON = "application/json"
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], extra: bool = True, **properties: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return out


def _number(low: float, high: float, default: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ["number", "null"], "minimum": low, "maximum": high}
    if default is not None:
        out["default"] = default
    return out


_TEXT_PART = _obj(["type", "text"], type={"const": "text"}, text=_STR)
_TEXT_CONTENT = {"oneOf": [_STR, {"type": "array", "items": _ref("TextPart"), "minItems": 1}]}
_PART = {
    "oneOf": [
        _ref("TextPart"),
        _obj(
            ["type", "image_url"],
            type={"const": "image_url"},
            image_url=_obj(["url"], url=_STR, detail={"enum": ["auto", "low", "high"]}),
        ),
        _obj(
            ["type", "input_audio"],
            type={"const": "input_audio"},
            input_audio=_obj(["data", "format"], data=_STR, format={"enum": ["wav", "mp3"]}),
        ),
        _obj(
            ["type", "file"],
            type={"const": "file"},
            file=_obj([], file_data=_STR, file_id=_STR, filename=_STR),
        ),
    ]
}
_TOOL_CALL = _obj(
    ["id", "type", "function"],
    id=_STR,
    type={"const": "function"},
    function=_obj(["name", "arguments"], name=_STR, arguments=_STR),
)


def _message(role: str, content: Any, required: tuple[str, ...] = (), **more: Any) -> Any:
    return _obj(["role", *required], role={"const": role}, content=content, **more)


_MESSAGE = {
    "oneOf": [
        _message("system", _TEXT_CONTENT, ("content",), name=_STR),
        _message("developer", _TEXT_CONTENT, ("content",), name=_STR),
        _message(
            "user",
            {"oneOf": [_STR, {"type": "array", "items": _ref("ContentPart"), "minItems": 1}]},
            ("content",),
            name=_STR,
        ),
        _message(
            "assistant",
            {"oneOf": [_TEXT_CONTENT["oneOf"][0], _TEXT_CONTENT["oneOf"][1], {"type": "null"}]},
            name=_STR,
            refusal=_STR_OR_NULL,
            tool_calls={"type": "array", "items": _TOOL_CALL},
        ),
        _message("tool", _TEXT_CONTENT, ("content", "tool_call_id"), tool_call_id=_STR),
        _message("function", _STR_OR_NULL, ("content", "name"), name=_STR),
    ]
}
_FUNCTION = _obj(
    ["name"],
    name={"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    description=_STR,
    parameters={"type": "object", "description": "A JSON Schema object."},
    strict={"type": ["boolean", "null"]},
)
_TOOL_CHOICE = {
    "oneOf": [
        {"enum": ["none", "auto", "required"]},
        _obj(["type", "function"], type={"const": "function"}, function=_obj(["name"], name=_STR)),
    ]
}
_RESPONSE_FORMAT = {
    "oneOf": [
        _obj(["type"], type={"enum": ["text", "json_object"]}),
        _obj(
            ["type", "json_schema"],
            type={"const": "json_schema"},
            json_schema=_obj(
                ["name"], name=_STR, schema={"type": "object"}, strict={"type": ["boolean", "null"]}
            ),
        ),
    ]
}
_CHAT_REQUEST = _obj(
    ["model", "messages"],
    model={
        "type": "string",
        "description": "'auto' lets the gateway's router choose; a name from GET /v1/models "
        "forces that model.",
        "examples": ["auto"],
    },
    messages={"type": "array", "items": _ref("Message"), "minItems": 1},
    stream={"type": ["boolean", "null"], "default": False},
    stream_options={
        "type": ["object", "null"],
        "properties": {"include_usage": {"type": "boolean"}},
    },
    temperature=_number(0, 2, 1),
    top_p=_number(0, 1, 1),
    frequency_penalty=_number(-2, 2, 0),
    presence_penalty=_number(-2, 2, 0),
    n={"type": ["integer", "null"], "minimum": 1, "maximum": 128, "default": 1},
    max_tokens={"type": ["integer", "null"], "minimum": 1, "deprecated": True},
    max_completion_tokens={"type": ["integer", "null"], "minimum": 1},
    seed={"type": ["integer", "null"]},
    stop={"oneOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}, {"type": "null"}]},
    logprobs={"type": ["boolean", "null"]},
    top_logprobs={"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    logit_bias={"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
    tools={
        "type": "array",
        "items": _obj(["type", "function"], type={"const": "function"}, function=_FUNCTION),
    },
    tool_choice=_TOOL_CHOICE,
    parallel_tool_calls={"type": "boolean"},
    response_format=_RESPONSE_FORMAT,
    reasoning_effort={"enum": ["minimal", "low", "medium", "high", None]},
    modalities={"type": ["array", "null"], "items": {"enum": ["text", "audio"]}},
    metadata={"type": ["object", "null"], "additionalProperties": _STR},
    store={"type": ["boolean", "null"]},
    service_tier={"enum": ["auto", "default", "flex", "priority", None]},
    user=_STR,
)
_CHAT_REQUEST["description"] = (
    "OpenAI's Chat Completions request. Fields not listed here are passed on to the model."
)
_ERROR = _obj(
    ["error"],
    error=_obj(
        ["message", "type", "param", "code"],
        message=_STR,
        type=_STR,
        param=_STR_OR_NULL,
        code=_STR_OR_NULL,
    ),
)
_COMPLETION = _obj(
    ["id", "object", "created", "model", "choices"],
    id=_STR,
    object={"const": "chat.completion"},
    created={"type": "integer"},
    model=_STR,
    choices={
        "type": "array",
        "items": _obj(
            ["index", "message"],
            index={"type": "integer"},
            message=_obj(["role"], role={"const": "assistant"}, content=_STR_OR_NULL),
            finish_reason=_STR_OR_NULL,
        ),
    },
    usage=_obj(
        ["prompt_tokens", "completion_tokens", "total_tokens"],
        prompt_tokens={"type": "integer"},
        completion_tokens={"type": "integer"},
        total_tokens={"type": "integer"},
    ),
)
_MODELS = _obj(
    ["object", "data"],
    object={"const": "list"},
    data={
        "type": "array",
        "items": _obj(["id", "object"], id=_STR, object={"const": "model"}, owned_by=_STR),
    },
)
_READY = _obj(
    ["status", "stores"],
    status={"enum": ["ready", "degraded"]},
    stores={"type": "object", "description": "Each store's state; details for the admin key."},
)

_ERRORS = {
    "400": "The request is malformed or out of bounds.",
    "401": "No API key, or one this gateway does not know.",
    "403": "Refused (a host name the open gateway does not answer).",
    "404": "Unknown path, or a model the policy does not define.",
    "405": "The path exists, not with this method.",
    "413": "The body is over the policy's limit.",
    "415": "The body is not sent as application/json.",
    "429": "A tenant's rate limit or budget.",
    "502": "Every attempt on the model and its fallbacks failed.",
    "503": "The gateway's queue is full, or the models are unavailable.",
    "504": "The models did not answer in time.",
}


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"schema": _STR} for name in names}


_GATEWAY_HEADERS = _headers(
    "x-gateway-cache", "x-gateway-model", "x-gateway-route", "x-gateway-request-id"
)
_CHAT_ERRORS = ("400", "401", "404", "413", "415", "429", "502", "503", "504")
_WHEN = {"anyOf": [_STR, {"type": "number"}]}
_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]


def _param(name: str, where: str, description: str, schema: Any = _STR) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description}


def _ok(description: str, schema: Any, media: str = JSON, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}, **extra}


_PATHS: dict[str, Any] = {
    "/v1/chat/completions": {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "OpenAI Chat Completions: answered from a cache or by the routed model.",
            "security": [{"apiKey": []}],
            "parameters": [
                _param("cache-control", "header", "no-cache, no-store, max-age=N"),
                _param("x-gateway-tags", "header", "k=v,... labels for the cost reports"),
                _param("x-session-id", "header", "keeps a conversation on one model"),
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("ChatCompletionRequest")}},
            },
            "responses": {
                "200": {
                    "description": "The completion; with stream: true, server-sent events "
                    "(data: {chunk}, then data: [DONE]).",
                    "headers": _GATEWAY_HEADERS,
                    "content": {
                        JSON: {"schema": _ref("ChatCompletion")},
                        "text/event-stream": {},
                    },
                },
                **_errors(*_CHAT_ERRORS),
            },
        }
    },
    "/v1/models": {
        "get": {
            "operationId": "listModels",
            "summary": "'auto' and the policy's models.",
            "security": [{"apiKey": []}],
            "responses": {"200": _ok("The models", _ref("ModelList")), **_errors("401")},
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Alive.",
            "security": [],
            "responses": {"200": _ok("Alive", _obj(["status"], status={"const": "ok"}))},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Ready (policy loaded) or degraded (a store is down); details for the "
            "admin key.",
            "security": [{}, {"adminKey": []}],
            "responses": {"200": _ok("Ready or degraded", _ref("Readiness"))},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics.",
            "security": _ADMIN,
            "responses": {"200": _ok("Prometheus text", _STR, "text/plain"), **_errors("401")},
        }
    },
    "/admin/reports/cost": {
        "get": {
            "operationId": "costReport",
            "summary": "Cost and savings per group, from the ledger.",
            "security": _ADMIN,
            "parameters": [
                _param("since", "query", "7d, an ISO time or unix seconds", _WHEN),
                _param("until", "query", "now, an ISO time or unix seconds", _WHEN),
                _param("by", "query", "model,route,tenant,...", {"type": "array", "items": _STR}),
                _param("tenant", "query", "one tenant only"),
                _param("tag", "query", "k=v"),
                _param("format", "query", "json or csv", {"enum": ["json", "csv"]}),
            ],
            "responses": {
                "200": {
                    "description": "The report",
                    "content": {JSON: {"schema": {"type": "object"}}, "text/csv": {"schema": _STR}},
                },
                **_errors("400", "401"),
            },
        }
    },
    "/admin/dashboard": {
        "get": {
            "operationId": "dashboard",
            "summary": "The cost dashboard's page: it holds no data and asks for the admin key.",
            "security": [],
            "responses": {"200": _ok("The page", _STR, "text/html")},
        }
    },
    "/admin/policy": {
        "get": {
            "operationId": "showPolicy",
            "summary": "The running policy, secrets redacted.",
            "security": _ADMIN,
            "responses": {"200": _ok("The policy", {"type": "object"}), **_errors("401")},
        }
    },
    "/admin/policy/reload": {
        "post": {
            "operationId": "reloadPolicy",
            "summary": "Load the policy file again; a bad file is refused and the old stays.",
            "security": _ADMIN,
            "responses": {"200": _ok("Reloaded", {"type": "object"}), **_errors("400", "401")},
        }
    },
    "/admin/cache": {
        "delete": {
            "operationId": "flushCache",
            "summary": "Flush one tenant's cached answers (?tenant=) or everyone's.",
            "security": _ADMIN,
            "parameters": [_param("tenant", "query", "the tenant whose entries go")],
            "responses": {"200": _ok("Flushed", {"type": "object"}), **_errors("401")},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "LLM gateway",
        "version": "1",
        "description": "An OpenAI-compatible gateway that caches, routes by difficulty and "
        "accounts for every token. Errors use OpenAI's shape.",
    },
    "paths": _PATHS,
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "A tenant's key."},
            "adminKey": {"type": "http", "scheme": "bearer", "description": "The admin key."},
        },
        "schemas": {
            "ChatCompletionRequest": _CHAT_REQUEST,
            "Message": _MESSAGE,
            "TextPart": _TEXT_PART,
            "ContentPart": _PART,
            "ChatCompletion": _COMPLETION,
            "ModelList": _MODELS,
            "Readiness": _READY,
            "Error": _ERROR,
        },
        "responses": {f"E{status}": _ok(text, _ref("Error")) for status, text in _ERRORS.items()},
    },
}
_BODY = msgspec.json.encode(DOCUMENT)


@get("/openapi.json")
async def openapi_document() -> Response[bytes]:
    return Response(_BODY, media_type=JSON, headers={"cache-control": "public, max-age=300"})


ROUTES = [openapi_document]
