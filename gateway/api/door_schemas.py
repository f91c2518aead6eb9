"""The JSON Schemas of the other front doors in `gateway.api.openapi`'s document: Anthropic's
Messages, OpenAI's Responses, legacy Completions and Embeddings, each as its API documents it.

Requests stay open (``additionalProperties`` unset) where the door passes unknown fields on or
refuses them with a 400 naming the field, so that the fuzzer sends such fields too; answers
list the fields a client reads.
"""

from __future__ import annotations

from typing import Any

from gateway.api.schemas import STR, STR_OR_NULL, obj, ref

_INT = {"type": "integer"}
_STOP = {"oneOf": [STR, {"type": "array", "items": STR, "maxItems": 4}, {"type": "null"}]}
_MODEL = {
    "type": "string",
    "description": "'auto' lets the gateway's router choose; a name from GET /v1/models "
    "forces that model.",
    "examples": ["auto"],
}

# --------------------------------------------------------------------- Anthropic Messages
_CACHE_CONTROL = obj(["type"], type={"const": "ephemeral"}, ttl={"enum": ["5m", "1h"]})
_A_TEXT = obj(["type", "text"], type={"const": "text"}, text=STR, cache_control=_CACHE_CONTROL)
_A_IMAGE = obj(
    ["type", "source"],
    type={"const": "image"},
    source={
        "oneOf": [
            obj(
                ["type", "media_type", "data"],
                type={"const": "base64"},
                media_type={"enum": ["image/jpeg", "image/png", "image/gif", "image/webp"]},
                data=STR,
            ),
            obj(["type", "url"], type={"const": "url"}, url=STR),
        ]
    },
)
_A_TOOL_USE = obj(
    ["type", "id", "name", "input"],
    type={"const": "tool_use"},
    id={"type": "string", "pattern": "^[a-zA-Z0-9_-]+$"},
    name=STR,
    input={"type": "object"},
)
_A_TOOL_RESULT = obj(
    ["type", "tool_use_id"],
    type={"const": "tool_result"},
    tool_use_id={"type": "string", "pattern": "^[a-zA-Z0-9_-]+$"},
    content={"oneOf": [STR, {"type": "array", "items": ref("AnthropicTextBlock")}]},
    is_error={"type": "boolean"},
)
_A_MESSAGE = obj(
    ["role", "content"],
    role={"enum": ["user", "assistant"]},
    content={
        "oneOf": [
            STR,
            {
                "type": "array",
                "minItems": 1,
                "items": {
                    "oneOf": [ref("AnthropicTextBlock"), _A_IMAGE, _A_TOOL_USE, _A_TOOL_RESULT]
                },
            },
        ]
    },
)
_A_TOOL = obj(
    ["name", "input_schema"],
    name={"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    description=STR,
    input_schema=obj(["type"], type={"const": "object"}),
)
_A_TOOL_CHOICE = obj(["type"], type={"enum": ["auto", "any", "tool", "none"]}, name=STR)


def _anthropic_request(*required: str, **more: Any) -> dict[str, Any]:
    return obj(
        ["model", "messages", *required],
        model=_MODEL,
        messages={"type": "array", "items": _A_MESSAGE, "minItems": 1},
        system={"oneOf": [STR, {"type": "array", "items": ref("AnthropicTextBlock")}]},
        tools={"type": "array", "items": _A_TOOL},
        tool_choice=_A_TOOL_CHOICE,
        **more,
    )


_A_REQUEST = _anthropic_request(
    "max_tokens",
    max_tokens={"type": "integer", "minimum": 1},
    stop_sequences={"type": "array", "items": STR},
    stream={"type": "boolean"},
    temperature={"type": "number", "minimum": 0, "maximum": 1},
    top_p={"type": "number", "minimum": 0, "maximum": 1},
    top_k={"type": "integer", "minimum": 1},
    metadata=obj([], user_id=STR_OR_NULL),
)
_A_USAGE = obj(
    ["input_tokens", "output_tokens"],
    input_tokens=_INT,
    output_tokens=_INT,
    cache_creation_input_tokens={"type": ["integer", "null"]},
    cache_read_input_tokens={"type": ["integer", "null"]},
)
_A_ANSWER = obj(
    ["id", "type", "role", "content", "model", "stop_reason", "usage"],
    id=STR,
    type={"const": "message"},
    role={"const": "assistant"},
    content={"type": "array", "items": {"oneOf": [ref("AnthropicTextBlock"), _A_TOOL_USE]}},
    model=STR,
    stop_reason={"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", None]},
    stop_sequence=STR_OR_NULL,
    usage=_A_USAGE,
)
_A_ERROR = obj(
    ["type", "error"],
    type={"const": "error"},
    error=obj(["type", "message"], type=STR, message=STR),
)

# ---------------------------------------------------------------------- OpenAI Responses
_R_CONTENT = {
    "oneOf": [
        STR,
        {
            "type": "array",
            "items": {
                "oneOf": [
                    obj(["type", "text"], type={"enum": ["input_text", "output_text"]}, text=STR),
                    obj(
                        ["type"],
                        type={"const": "input_image"},
                        image_url=STR,
                        detail={"enum": ["auto", "low", "high"]},
                    ),
                ]
            },
        },
    ]
}
_R_ITEM = {
    "oneOf": [
        obj(
            ["role", "content"],
            type={"const": "message"},
            role={"enum": ["user", "assistant", "system", "developer"]},
            content=_R_CONTENT,
        ),
        obj(
            ["type", "call_id", "name", "arguments"],
            type={"const": "function_call"},
            call_id=STR,
            name=STR,
            arguments=STR,
        ),
        obj(
            ["type", "call_id", "output"],
            type={"const": "function_call_output"},
            call_id=STR,
            output=STR,
        ),
    ]
}
_R_TOOL = obj(
    ["type", "name"],
    type={"const": "function"},
    name={"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    description=STR_OR_NULL,
    parameters={"type": ["object", "null"]},
    strict={"type": ["boolean", "null"]},
)
_R_FORMAT = {
    "oneOf": [
        obj(["type"], type={"enum": ["text", "json_object"]}),
        obj(
            ["type", "name", "schema"],
            type={"const": "json_schema"},
            name=STR,
            schema={"type": "object"},
            strict={"type": ["boolean", "null"]},
        ),
    ]
}
_R_REQUEST = obj(
    ["model", "input"],
    model=_MODEL,
    input={"oneOf": [STR, {"type": "array", "items": _R_ITEM, "minItems": 1}]},
    instructions=STR_OR_NULL,
    tools={"type": "array", "items": _R_TOOL},
    tool_choice={
        "oneOf": [
            {"enum": ["none", "auto", "required"]},
            obj(["type", "name"], type={"const": "function"}, name=STR),
        ]
    },
    text=obj([], format=_R_FORMAT),
    max_output_tokens={"type": ["integer", "null"], "minimum": 1},
    temperature={"type": ["number", "null"], "minimum": 0, "maximum": 2},
    top_p={"type": ["number", "null"], "minimum": 0, "maximum": 1},
    store={"type": ["boolean", "null"]},
    stream={"type": ["boolean", "null"]},
    previous_response_id=STR_OR_NULL,
    parallel_tool_calls={"type": ["boolean", "null"]},
    metadata={"type": ["object", "null"], "additionalProperties": STR},
    user=STR,
)
_R_ANSWER = obj(
    ["id", "object", "created_at", "status", "model", "output"],
    id=STR,
    object={"const": "response"},
    created_at={"type": "number"},
    status={"enum": ["completed", "incomplete", "failed", "in_progress"]},
    model=STR,
    output={"type": "array", "items": {"type": "object"}},
    previous_response_id=STR_OR_NULL,
    usage={
        "oneOf": [
            obj(
                ["input_tokens", "output_tokens", "total_tokens"],
                input_tokens=_INT,
                output_tokens=_INT,
                total_tokens=_INT,
            ),
            {"type": "null"},
        ]
    },
)
_R_DELETED = obj(["id", "deleted"], id=STR, object=STR, deleted={"const": True})

# ------------------------------------------------------------ Completions and Embeddings
_C_REQUEST = obj(
    ["model", "prompt"],
    model=_MODEL,
    prompt={"type": "string"},
    max_tokens={"type": ["integer", "null"], "minimum": 1, "default": 16},
    temperature={"type": ["number", "null"], "minimum": 0, "maximum": 2},
    top_p={"type": ["number", "null"], "minimum": 0, "maximum": 1},
    stream={"type": ["boolean", "null"]},
    stop=_STOP,
    seed={"type": ["integer", "null"]},
    user=STR,
)
_C_ANSWER = obj(
    ["id", "object", "created", "model", "choices"],
    id=STR,
    object={"const": "text_completion"},
    created=_INT,
    model=STR,
    choices={
        "type": "array",
        "items": obj(["text", "index"], text=STR, index=_INT, finish_reason=STR_OR_NULL),
    },
)
_E_REQUEST = obj(
    ["model", "input"],
    model=_MODEL,
    input={
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        ]
    },
    encoding_format={"enum": ["float", "base64"]},
    dimensions={"type": "integer", "minimum": 1},
    user=STR,
)
_E_ANSWER = obj(
    ["object", "data", "model", "usage"],
    object={"const": "list"},
    data={
        "type": "array",
        "items": obj(
            ["object", "index", "embedding"],
            object={"const": "embedding"},
            index=_INT,
            embedding={"oneOf": [{"type": "array", "items": {"type": "number"}}, STR]},
        ),
    },
    model=STR,
    usage=obj(["prompt_tokens", "total_tokens"], prompt_tokens=_INT, total_tokens=_INT),
)

_F_REQUEST = obj(
    ["request_id", "score"],
    extra=False,
    request_id={"type": "string", "minLength": 1, "maxLength": 200},
    score={"type": "number", "minimum": 0, "maximum": 1},
    text={"type": "string", "maxLength": 4000},
)
_F_ANSWER = obj(
    ["object", "request_id", "score", "stored"],
    object={"const": "feedback"},
    request_id=STR,
    score={"type": "number"},
    stored={"const": True},
)

DOOR_SCHEMAS: dict[str, Any] = {
    "AnthropicMessagesRequest": _A_REQUEST,
    "AnthropicCountTokensRequest": _anthropic_request(),
    "AnthropicTextBlock": _A_TEXT,
    "AnthropicMessage": _A_ANSWER,
    "AnthropicTokenCount": obj(["input_tokens"], input_tokens=_INT),
    "AnthropicError": _A_ERROR,
    "ResponseRequest": _R_REQUEST,
    "Response": _R_ANSWER,
    "ResponseDeleted": _R_DELETED,
    "CompletionRequest": _C_REQUEST,
    "TextCompletion": _C_ANSWER,
    "EmbeddingRequest": _E_REQUEST,
    "EmbeddingList": _E_ANSWER,
    "FeedbackRequest": _F_REQUEST,
    "Feedback": _F_ANSWER,
}
