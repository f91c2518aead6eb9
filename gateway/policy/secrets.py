"""Which values of a policy are secrets, beyond the keys it names as such (``api_key``, tenant
and admin keys): extra headers whose name says they carry a credential (Azure's ``api-key``,
``x-api-key``, ``authorization``...), and credentials inside a URL (``https://user:pass@host``,
``?key=...``). ``/admin/policy`` redacts them; ``gateway policy check`` warns when one is
written literally instead of as an ``${ENV_VAR}`` reference.

Header names are matched by what they contain (``auth``, ``key``, ``token``, ``secret``,
``password``, ``cookie``, ``credential``, ``signature``), so a vendor's new header is caught
too; a header that only looks like one (``x-key-id``) is redacted needlessly, never shown
wrongly.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
MODEL_SECRETS: tuple[tuple[str, ...], ...] = (
    ("api_key",),
    ("aws", "access_key_id"),
    ("aws", "secret_access_key"),
    ("aws", "session_token"),
)
"""The fields of a policy's model entry that hold credentials (a key path inside the entry)."""
_SECRET_NAME = re.compile(r"auth|key|token|secret|passw|cookie|credential|signature", re.I)


def secret_name(name: str) -> bool:
    """A header or query parameter whose value is a credential, by its name."""
    return _SECRET_NAME.search(name) is not None


def url_credentials(url: str) -> list[str]:
    """The credentials a URL carries: its user info, the values of its secret-named query
    parameters (the whole URL when it cannot be parsed)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [parts.netloc.rsplit("@", 1)[0]] if "@" in parts.netloc else []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if secret_name(k)]
    return found


def redact_url(url: str) -> str:
    """``url`` with its user info and the values of secret-named query parameters redacted (all
    of it when it cannot be parsed)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc and host is not None:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(secret_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if secret_name(k) else v) for k, v in pairs], safe="[]")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_fields(entry: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    """Replace, in place, the values set at these key paths of ``entry`` by `REDACTED`."""
    for path in paths:
        node: Any = entry
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]):
            node[path[-1]] = REDACTED
