"""``GET /openapi.json``: the gateway's HTTP API as an OpenAPI 3.1 document, written by hand.

Litestar's inference from the handlers cannot describe it: the doors read their bodies
themselves (`gateway.pipeline.normalize`, `gateway.wire`), so each request schema here is the
API's own as its vendor documents it (fields the gateway does not know pass through or are
refused by name, so ``additionalProperties`` stays open), and every error is OpenAI's error
object, but under ``/v1/messages``, where it is Anthropic's.

The document is public, as it describes the API and no data: it names no model, tenant, key,
path or version of the running policy (a client asks ``/v1/models`` for the models). It is
built once, at import, and served as the same bytes to everyone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get

from gateway.api.batch_schemas import BATCH_PATHS, BATCH_SCHEMAS
from gateway.api.door_schemas import DOOR_SCHEMAS
from gateway.api.schemas import SCHEMAS, STR, obj, ref

JSON = "application/json"
_ERRORS = {
    "400": "The request is malformed or out of bounds.",
    "401": "No API key, or one this gateway does not know.",
    "403": "Refused (a host name the open gateway does not answer).",
    "404": "Unknown path, or a model the policy does not define.",
    "405": "The path exists, not with this method.",
    "409": "The object's state does not allow it (a finished batch cancelled).",
    "413": "The body is over the policy's limit.",
    "415": "The body is not sent as application/json.",
    "429": "A tenant's rate limit or budget.",
    "502": "Every attempt on the model and its fallbacks failed.",
    "503": "The gateway's queue is full, or the models are unavailable.",
    "504": "The models did not answer in time.",
}


_ANTHROPIC_ERRORS = {
    **{status: text for status, text in _ERRORS.items() if status not in ("503",)},
    "529": "The gateway's queue is full (Anthropic's overloaded_error).",
    "503": "The models are unavailable.",
}


def _errors(*statuses: str, shape: str = "E") -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/{shape}{s}"} for s in statuses}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"schema": STR} for name in names}


_GATEWAY_HEADERS = _headers(
    "x-gateway-cache", "x-gateway-model", "x-gateway-route", "x-gateway-request-id"
)
_CHAT_ERRORS = ("400", "401", "404", "413", "415", "429", "502", "503", "504")
_MESSAGES_ERRORS = ("400", "401", "404", "413", "415", "429", "502", "503", "504", "529")
_WHEN = {"anyOf": [STR, {"type": "number"}]}
_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]


def _param(name: str, where: str, description: str, schema: Any = STR) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description}


def _ok(description: str, schema: Any, media: str = JSON, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}, **extra}


_DOOR_HEADERS = [
    _param("cache-control", "header", "no-cache, no-store, max-age=N"),
    _param("x-gateway-tags", "header", "k=v,... labels for the cost reports"),
    _param("x-session-id", "header", "keeps a conversation on one model"),
]


def _door(
    operation: str,
    summary: str,
    request: str,
    answer: str,
    stream: str | None,
    errors: dict[str, Any],
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """A POST front door: its request schema, its answer (JSON, or server-sent events when
    ``stream`` says how they are framed) with the x-gateway-* headers, and its errors."""
    content: dict[str, Any] = {JSON: {"schema": ref(answer)}}
    description = "The answer."
    if stream is not None:
        content["text/event-stream"] = {}
        description = f"The answer; with stream: true, server-sent events ({stream})."
    ok = {"description": description, "headers": _GATEWAY_HEADERS, "content": content}
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "security": security or [{"apiKey": []}],
            "parameters": _DOOR_HEADERS,
            "requestBody": {"required": True, "content": {JSON: {"schema": ref(request)}}},
            "responses": {"200": ok, **errors},
        }
    }


_ANTHROPIC_KEY: list[dict[str, list[str]]] = [{"apiKey": []}, {"anthropicKey": []}]
_RESPONSE_ID = {**_param("response_id", "path", "resp_..."), "required": True}


_PATHS: dict[str, Any] = {
    "/v1/chat/completions": {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "OpenAI Chat Completions: answered from a cache or by the routed model.",
            "security": [{"apiKey": []}],
            "parameters": _DOOR_HEADERS,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("ChatCompletionRequest")}},
            },
            "responses": {
                "200": {
                    "description": "The completion; with stream: true, server-sent events "
                    "(data: {chunk}, then data: [DONE]).",
                    "headers": _GATEWAY_HEADERS,
                    "content": {
                        JSON: {"schema": ref("ChatCompletion")},
                        "text/event-stream": {},
                    },
                },
                **_errors(*_CHAT_ERRORS),
            },
        }
    },
    "/v1/messages": _door(
        "createMessage",
        "Anthropic Messages, answered through the same pipeline; errors in Anthropic's shape.",
        "AnthropicMessagesRequest",
        "AnthropicMessage",
        "message_start ... message_stop",
        _errors(*_MESSAGES_ERRORS, shape="A"),
        _ANTHROPIC_KEY,
    ),
    "/v1/messages/count_tokens": {
        "post": {
            "operationId": "countMessageTokens",
            "summary": "The input tokens of a Messages request (system and tools included).",
            "security": _ANTHROPIC_KEY,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("AnthropicCountTokensRequest")}},
            },
            "responses": {
                "200": _ok("The count", ref("AnthropicTokenCount")),
                **_errors("400", "401", "404", "413", "415", shape="A"),
            },
        }
    },
    "/v1/responses": _door(
        "createResponse",
        "OpenAI Responses, answered through the same pipeline; stored unless store: false.",
        "ResponseRequest",
        "Response",
        "response.created ... response.completed",
        _errors(*_CHAT_ERRORS),
    ),
    "/v1/responses/{response_id}": {
        "get": {
            "operationId": "getResponse",
            "summary": "A stored response of the caller's tenant.",
            "security": [{"apiKey": []}],
            "parameters": [_RESPONSE_ID],
            "responses": {"200": _ok("The response", ref("Response")), **_errors("401", "404")},
        },
        "delete": {
            "operationId": "deleteResponse",
            "summary": "Delete a stored response of the caller's tenant.",
            "security": [{"apiKey": []}],
            "parameters": [_RESPONSE_ID],
            "responses": {
                "200": _ok("Deleted", ref("ResponseDeleted")),
                **_errors("401", "404"),
            },
        },
    },
    "/v1/completions": _door(
        "createCompletion",
        "OpenAI's legacy Completions: a prompt answered through the same pipeline.",
        "CompletionRequest",
        "TextCompletion",
        "data: {chunk}, then data: [DONE]",
        _errors(*_CHAT_ERRORS),
    ),
    "/v1/embeddings": _door(
        "createEmbedding",
        "Embeddings from a policy model, or the bundled all-MiniLM-L6-v2; cached per input.",
        "EmbeddingRequest",
        "EmbeddingList",
        None,
        _errors(*_CHAT_ERRORS),
    ),
    "/v1/feedback": {
        "post": {
            "operationId": "createFeedback",
            "summary": "Score an answer the caller's tenant got (by its x-gateway-request-id), "
            "from 0 to 1: a label the router can learn from.",
            "security": [{"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("FeedbackRequest")}},
            },
            "responses": {
                "200": _ok("Stored", ref("Feedback")),
                **_errors("400", "401", "404", "413", "415"),
            },
        }
    },
    "/v1/models": {
        "get": {
            "operationId": "listModels",
            "summary": "'auto' and the policy's models.",
            "security": [{"apiKey": []}],
            "responses": {"200": _ok("The models", ref("ModelList")), **_errors("401")},
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Alive.",
            "security": [],
            "responses": {"200": _ok("Alive", obj(["status"], status={"const": "ok"}))},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Ready (policy loaded) or degraded (a store is down); details for the "
            "admin key.",
            "security": [{}, {"adminKey": []}],
            "responses": {"200": _ok("Ready or degraded", ref("Readiness"))},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics.",
            "security": _ADMIN,
            "responses": {"200": _ok("Prometheus text", STR, "text/plain"), **_errors("401")},
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
                _param("by", "query", "model,route,tenant,...", {"type": "array", "items": STR}),
                _param("tenant", "query", "one tenant only"),
                _param("tag", "query", "k=v"),
                _param("format", "query", "json or csv", {"enum": ["json", "csv"]}),
            ],
            "responses": {
                "200": {
                    "description": "The report",
                    "content": {JSON: {"schema": {"type": "object"}}, "text/csv": {"schema": STR}},
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
            "responses": {"200": _ok("The page", STR, "text/html")},
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
    "paths": {**_PATHS, **BATCH_PATHS},
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "A tenant's key."},
            "adminKey": {"type": "http", "scheme": "bearer", "description": "The admin key."},
            "anthropicKey": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": "A tenant's key, as Anthropic's SDK sends it.",
            },
        },
        "schemas": {**SCHEMAS, **DOOR_SCHEMAS, **BATCH_SCHEMAS},
        "responses": {
            **{f"E{status}": _ok(text, ref("Error")) for status, text in _ERRORS.items()},
            **{
                f"A{status}": _ok(text, ref("AnthropicError"))
                for status, text in _ANTHROPIC_ERRORS.items()
            },
        },
    },
}
_BODY = msgspec.json.encode(DOCUMENT)


@get("/openapi.json")
async def openapi_document() -> Response[bytes]:
    return Response(_BODY, media_type=JSON, headers={"cache-control": "public, max-age=300"})


ROUTES = [openapi_document]
