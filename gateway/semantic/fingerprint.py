"""What a semantic hit must share besides a close question: the request's context fingerprint.

Only the last user message's text is embedded (:func:`gateway.ml.text.request_text`); everything
else in the request that can change the answer is hashed into :func:`context_fingerprint`; the cache
searches only among entries with the same tenant and fingerprint. So "now do it in Rust" matches
only within the same conversation, a different system prompt or tool list is a different cache,
and "answer in JSON" with another schema never receives a prose answer.

Classification of the Chat Completions fields (a field not named here is *unknown* and goes into
the fingerprint as is: an unknown parameter may shape the answer, and a wasted hit costs less
than a wrong one):

- **embedded, not fingerprinted**: the text parts of the last user message.
- **fingerprinted**: every other message (system, developer, earlier user/assistant/tool turns,
  and any message after the last user message), the non-text parts of the last user message
  (images, audio, files) and its ``name``; ``model``; ``tools``, ``tool_choice``,
  ``parallel_tool_calls``, ``functions``, ``function_call``; ``response_format``; ``max_tokens``,
  ``max_completion_tokens``, ``stop``, ``seed``, ``n``, ``logit_bias``, ``logprobs``,
  ``top_logprobs``, ``presence_penalty``, ``frequency_penalty``, ``reasoning_effort``,
  ``verbosity``, ``modalities``, ``audio``, ``prediction``, ``web_search_options``; and unknown
  fields.
- **bucketed**: ``temperature`` into 0 (greedy), (0, 0.5], (0.5, 1], above 1 (absent counts as
  the API default 1); ``top_p`` rounded to 0.1 (absent = 1). Nearby sampling settings give
  interchangeable answers; greedy and sampled ones are kept apart.
- **ignored**: ``stream`` and ``stream_options`` (a hit is replayed in either form), ``user``,
  ``safety_identifier``, ``metadata``, ``store``, ``service_tier``, ``prompt_cache_key``.

Message content is canonicalised first: a string equals a single text part, surrounding
whitespace of text is dropped, and object keys are sorted, so equivalent spellings of the same
request share a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["IGNORED_FIELDS", "context_fingerprint"]

IGNORED_FIELDS = frozenset(
    {
        "messages",  # handled part by part below
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "temperature",  # bucketed below
        "top_p",  # bucketed below
    }
)
_FINGERPRINT_VERSION = "fp1"


def _last_user_index(messages: Sequence[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, Mapping) and message.get("role") == "user":
            return i
    return None


def _canonical_content(content: Any) -> Any:
    if isinstance(content, str):
        return [{"type": "text", "text": content.strip()}]
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append({"type": "text", "text": str(part.get("text", "")).strip()})
            else:
                parts.append(part)
        return parts
    return content


def _canonical_message(message: Any, *, drop_text: bool) -> Any:
    if not isinstance(message, Mapping):
        return message
    out = dict(message)
    content = _canonical_content(message.get("content"))
    if drop_text and isinstance(content, list):
        content = [p for p in content if not (isinstance(p, Mapping) and p.get("type") == "text")]
    out["content"] = content
    return out


def _temperature_bucket(value: Any) -> str:
    if value is None:
        value = 1.0
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"raw:{value!r}"
    if value <= 0:
        return "t0"
    if value <= 0.5:
        return "t(0,0.5]"
    if value <= 1.0:
        return "t(0.5,1]"
    return "t>1"


def _top_p_bucket(value: Any) -> str:
    if value is None:
        value = 1.0
    if not isinstance(value, int | float) or isinstance(value, bool):
        return f"raw:{value!r}"
    return f"p{round(float(value), 1):g}"


def context_fingerprint(body: Mapping[str, Any]) -> str:
    """A hex digest of everything in a Chat Completions request body, other than the last user
    message's text, that can change the answer (see the module docstring for the field list)."""
    messages = body.get("messages")
    context: list[Any] = []
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        last = _last_user_index(messages)
        context = [_canonical_message(m, drop_text=(i == last)) for i, m in enumerate(messages)]
    fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    fields["temperature"] = _temperature_bucket(body.get("temperature"))
    fields["top_p"] = _top_p_bucket(body.get("top_p"))
    canonical = json.dumps(
        [_FINGERPRINT_VERSION, context, fields],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=repr,
    )
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
