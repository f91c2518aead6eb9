"""The HTTP face: thin handlers that read a request, run the pipeline, and write the answer.

- :mod:`~gateway.api.door`: what every front door does around the pipeline; a door adds only
  its wire format (:mod:`~gateway.api.chat`: OpenAI Chat Completions;
  :mod:`~gateway.api.completions`: OpenAI's legacy Completions;
  :mod:`~gateway.api.embeddings`: OpenAI Embeddings;
  :mod:`~gateway.api.messages`: Anthropic Messages;
  :mod:`~gateway.api.responses`: OpenAI Responses, with stored responses).
- :mod:`~gateway.api.feedback`: ``POST /v1/feedback``, a client's score of an answer.
- :mod:`~gateway.api.files` and :mod:`~gateway.api.batches`: OpenAI's Files and Batch APIs,
  whose lines run through those doors (:mod:`gateway.batch`).
- :mod:`~gateway.api.health`: ``/healthz``, ``/readyz``, ``/v1/models``.
- :mod:`~gateway.api.admin` and :mod:`~gateway.api.reports`: the admin API.
- :mod:`~gateway.api.openapi` and :mod:`~gateway.api.schemas`: ``/openapi.json``, the API
  described (written by hand).
- :mod:`~gateway.api.deps`: what handlers declare as parameters, provided by Litestar.
- :mod:`~gateway.api.errors`: the one exception handler, OpenAI's error shape.
"""

from gateway.api import (
    admin,
    batches,
    chat,
    completions,
    embeddings,
    feedback,
    files,
    health,
    messages,
    openapi,
    reports,
    responses,
)
from gateway.api.deps import dependencies
from gateway.api.errors import EXCEPTION_HANDLERS

ROUTES = [
    chat.chat_completions,
    completions.legacy_completions,
    embeddings.create_embeddings,
    messages.messages,
    messages.count_tokens,
    feedback.feedback,
    *responses.ROUTES,
    *files.ROUTES,
    *batches.ROUTES,
    *health.ROUTES,
    *admin.ROUTES,
    *reports.ROUTES,
    *openapi.ROUTES,
]

__all__ = ["EXCEPTION_HANDLERS", "ROUTES", "dependencies"]
