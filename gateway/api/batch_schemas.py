"""The Files and Batch APIs in ``/openapi.json``: their paths and schemas, as OpenAI documents
them (objects open to fields a later API version adds). `gateway.api.openapi` merges them."""

from __future__ import annotations

from typing import Any, get_args

from gateway.api.schemas import STR, STR_OR_NULL, obj, ref
from gateway.batch.wire import ENDPOINTS, Status

JSON = "application/json"
INT = {"type": "integer"}
INT_OR_NULL = {"type": ["integer", "null"]}
_KEY: list[dict[str, list[str]]] = [{"apiKey": []}]


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _ok(description: str, schema: Any, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _id(name: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": example}


def _list(item: str) -> dict[str, Any]:
    return obj(
        ["object", "data", "has_more"],
        object={"const": "list"},
        data={"type": "array", "items": ref(item)},
        first_id=STR_OR_NULL,
        last_id=STR_OR_NULL,
        has_more={"type": "boolean"},
    )


_PAGE = [
    {"name": "after", "in": "query", "schema": STR, "description": "the last id of a page"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
]
_FILE_ID, _BATCH_ID = _id("file_id", "file-..."), _id("batch_id", "batch_...")

_TIMES: dict[str, Any] = {
    f"{when}_at": INT_OR_NULL
    for when in (*(status for status in get_args(Status) if status != "validating"), "expires")
}
"""The Batch's times (``<status>_at``, ``expires_at``): unix seconds, null until then."""

BATCH_SCHEMAS: dict[str, Any] = {
    "FileObject": obj(
        ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
        id=STR,
        object={"const": "file"},
        bytes=INT,
        created_at=INT,
        filename=STR,
        purpose={"enum": ["batch", "batch_output"]},
        status={"enum": ["uploaded", "processed", "error"]},
        expires_at=INT_OR_NULL,
        status_details=STR_OR_NULL,
    ),
    "FileList": _list("FileObject"),
    "FileDeleted": obj(
        ["id", "object", "deleted"], id=STR, object={"const": "file"}, deleted={"type": "boolean"}
    ),
    "FileUpload": obj(
        ["file", "purpose"],
        file={"type": "string", "contentMediaType": "application/octet-stream"},
        purpose={"enum": ["batch"]},
    ),
    "BatchRequest": obj(
        ["input_file_id", "endpoint", "completion_window"],
        input_file_id=STR,
        endpoint={"enum": list(ENDPOINTS)},
        completion_window={"const": "24h"},
        metadata={"type": ["object", "null"], "additionalProperties": STR, "maxProperties": 16},
    ),
    "Batch": obj(
        ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
        id=STR,
        object={"const": "batch"},
        endpoint=STR,
        input_file_id=STR,
        completion_window=STR,
        status={"enum": list(get_args(Status))},
        created_at=INT,
        output_file_id=STR_OR_NULL,
        error_file_id=STR_OR_NULL,
        errors={"type": ["object", "null"]},
        request_counts=obj(["total", "completed", "failed"], total=INT, completed=INT, failed=INT),
        metadata={"type": ["object", "null"]},
        **_TIMES,
    ),
    "BatchList": _list("Batch"),
}

BATCH_PATHS: dict[str, Any] = {
    "/v1/files": {
        "post": {
            "operationId": "createFile",
            "summary": "Upload a JSONL file of batch requests (purpose batch), at most the "
            "policy's batch.max_file_bytes.",
            "security": _KEY,
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": ref("FileUpload")}},
            },
            "responses": {
                "200": _ok("The file", ref("FileObject")),
                **_errors("400", "401", "413"),
            },
        },
        "get": {
            "operationId": "listFiles",
            "summary": "The caller's tenant's files, newest first.",
            "security": _KEY,
            "parameters": [
                *_PAGE,
                {"name": "purpose", "in": "query", "schema": STR},
                {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
            ],
            "responses": {"200": _ok("The files", ref("FileList")), **_errors("400", "401")},
        },
    },
    "/v1/files/{file_id}": {
        "get": {
            "operationId": "retrieveFile",
            "summary": "A file of the caller's tenant.",
            "security": _KEY,
            "parameters": [_FILE_ID],
            "responses": {"200": _ok("The file", ref("FileObject")), **_errors("401", "404")},
        },
        "delete": {
            "operationId": "deleteFile",
            "summary": "Delete a file of the caller's tenant.",
            "security": _KEY,
            "parameters": [_FILE_ID],
            "responses": {"200": _ok("Deleted", ref("FileDeleted")), **_errors("401", "404")},
        },
    },
    "/v1/files/{file_id}/content": {
        "get": {
            "operationId": "fileContent",
            "summary": "A file's bytes (JSONL).",
            "security": _KEY,
            "parameters": [_FILE_ID],
            "responses": {
                "200": _ok("The bytes", STR, "application/octet-stream"),
                **_errors("401", "404"),
            },
        }
    },
    "/v1/batches": {
        "post": {
            "operationId": "createBatch",
            "summary": "Run a file's requests as a batch: each through the same pipeline as a "
            "live request, at the models' batch price.",
            "security": _KEY,
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("BatchRequest")}}},
            "responses": {
                "200": _ok("The batch", ref("Batch")),
                **_errors("400", "401", "413", "415"),
            },
        },
        "get": {
            "operationId": "listBatches",
            "summary": "The caller's tenant's batches, newest first.",
            "security": _KEY,
            "parameters": _PAGE,
            "responses": {"200": _ok("The batches", ref("BatchList")), **_errors("400", "401")},
        },
    },
    "/v1/batches/{batch_id}": {
        "get": {
            "operationId": "retrieveBatch",
            "summary": "A batch of the caller's tenant, its request_counts as of now.",
            "security": _KEY,
            "parameters": [_BATCH_ID],
            "responses": {"200": _ok("The batch", ref("Batch")), **_errors("401", "404")},
        }
    },
    "/v1/batches/{batch_id}/cancel": {
        "post": {
            "operationId": "cancelBatch",
            "summary": "Stop a batch: its lines in flight finish, the rest do not run.",
            "security": _KEY,
            "parameters": [_BATCH_ID],
            "responses": {"200": _ok("The batch", ref("Batch")), **_errors("401", "404", "409")},
        }
    },
}
