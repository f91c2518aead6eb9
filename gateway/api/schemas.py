"""The JSON Schemas of `gateway.api.openapi`'s document: OpenAI's Chat Completions request and
answer as OpenAI documents them (unknown request fields pass through, so objects stay open),
OpenAI's error object, and the gateway's own small bodies."""

from __future__ import annotations

from typing import Any

STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], extra: bool = True, **properties: Any) -> dict[str, Any]:
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


_TEXT_PART = obj(["type", "text"], type={"const": "text"}, text=STR)
_TEXT_CONTENT = {"oneOf": [STR, {"type": "array", "items": ref("TextPart"), "minItems": 1}]}
_PART = {
    "oneOf": [
        ref("TextPart"),
        obj(
            ["type", "image_url"],
            type={"const": "image_url"},
            image_url=obj(["url"], url=STR, detail={"enum": ["auto", "low", "high"]}),
        ),
        obj(
            ["type", "input_audio"],
            type={"const": "input_audio"},
            input_audio=obj(["data", "format"], data=STR, format={"enum": ["wav", "mp3"]}),
        ),
        obj(
            ["type", "file"],
            type={"const": "file"},
            file=obj([], file_data=STR, file_id=STR, filename=STR),
        ),
    ]
}
_TOOL_CALL = obj(
    ["id", "type", "function"],
    id=STR,
    type={"const": "function"},
    function=obj(["name", "arguments"], name=STR, arguments=STR),
)


def _message(role: str, content: Any, required: tuple[str, ...] = (), **more: Any) -> Any:
    return obj(["role", *required], role={"const": role}, content=content, **more)


_MESSAGE = {
    "oneOf": [
        _message("system", _TEXT_CONTENT, ("content",), name=STR),
        _message("developer", _TEXT_CONTENT, ("content",), name=STR),
        _message(
            "user",
            {"oneOf": [STR, {"type": "array", "items": ref("ContentPart"), "minItems": 1}]},
            ("content",),
            name=STR,
        ),
        _message(
            "assistant",
            {"oneOf": [_TEXT_CONTENT["oneOf"][0], _TEXT_CONTENT["oneOf"][1], {"type": "null"}]},
            name=STR,
            refusal=STR_OR_NULL,
            tool_calls={"type": "array", "items": _TOOL_CALL},
        ),
        _message("tool", _TEXT_CONTENT, ("content", "tool_call_id"), tool_call_id=STR),
        _message("function", STR_OR_NULL, ("content", "name"), name=STR),
    ]
}
_FUNCTION = obj(
    ["name"],
    name={"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    description=STR,
    parameters={"type": "object", "description": "A JSON Schema object."},
    strict={"type": ["boolean", "null"]},
)
_TOOL_CHOICE = {
    "oneOf": [
        {"enum": ["none", "auto", "required"]},
        obj(["type", "function"], type={"const": "function"}, function=obj(["name"], name=STR)),
    ]
}
_RESPONSE_FORMAT = {
    "oneOf": [
        obj(["type"], type={"enum": ["text", "json_object"]}),
        obj(
            ["type", "json_schema"],
            type={"const": "json_schema"},
            json_schema=obj(
                ["name"], name=STR, schema={"type": "object"}, strict={"type": ["boolean", "null"]}
            ),
        ),
    ]
}
_CHAT_REQUEST = obj(
    ["model", "messages"],
    model={
        "type": "string",
        "description": "'auto' lets the gateway's router choose; a name from GET /v1/models "
        "forces that model.",
        "examples": ["auto"],
    },
    messages={"type": "array", "items": ref("Message"), "minItems": 1},
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
    stop={"oneOf": [STR, {"type": "array", "items": STR, "maxItems": 4}, {"type": "null"}]},
    logprobs={"type": ["boolean", "null"]},
    top_logprobs={"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    logit_bias={"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
    tools={
        "type": "array",
        "items": obj(["type", "function"], type={"const": "function"}, function=_FUNCTION),
    },
    tool_choice=_TOOL_CHOICE,
    parallel_tool_calls={"type": "boolean"},
    response_format=_RESPONSE_FORMAT,
    reasoning_effort={"enum": ["minimal", "low", "medium", "high", None]},
    modalities={"type": ["array", "null"], "items": {"enum": ["text", "audio"]}},
    metadata={"type": ["object", "null"], "additionalProperties": STR},
    store={"type": ["boolean", "null"]},
    service_tier={"enum": ["auto", "default", "flex", "priority", None]},
    user=STR,
)
_CHAT_REQUEST["description"] = (
    "OpenAI's Chat Completions request. Fields not listed here are passed on to the model."
)
_ERROR = obj(
    ["error"],
    error=obj(
        ["message", "type", "param", "code"],
        message=STR,
        type=STR,
        param=STR_OR_NULL,
        code=STR_OR_NULL,
    ),
)
_COMPLETION = obj(
    ["id", "object", "created", "model", "choices"],
    id=STR,
    object={"const": "chat.completion"},
    created={"type": "integer"},
    model=STR,
    choices={
        "type": "array",
        "items": obj(
            ["index", "message"],
            index={"type": "integer"},
            message=obj(["role"], role={"const": "assistant"}, content=STR_OR_NULL),
            finish_reason=STR_OR_NULL,
        ),
    },
    usage=obj(
        ["prompt_tokens", "completion_tokens", "total_tokens"],
        prompt_tokens={"type": "integer"},
        completion_tokens={"type": "integer"},
        total_tokens={"type": "integer"},
    ),
)
_MODELS = obj(
    ["object", "data"],
    object={"const": "list"},
    data={
        "type": "array",
        "items": obj(["id", "object"], id=STR, object={"const": "model"}, owned_by=STR),
    },
)
_READY = obj(
    ["status", "stores"],
    status={"enum": ["ready", "degraded"]},
    stores={"type": "object", "description": "Each store's state; details for the admin key."},
)

SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": _CHAT_REQUEST,
    "Message": _MESSAGE,
    "TextPart": _TEXT_PART,
    "ContentPart": _PART,
    "ChatCompletion": _COMPLETION,
    "ModelList": _MODELS,
    "Readiness": _READY,
    "Error": _ERROR,
}
