"""What fuzzing the gateway turned up, each kept as a regular test (issue 13, "Proof").

Each was a 500 (``internal_error``) or a 502 before its fix; each is now the client's error, a
4xx in OpenAI's shape.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import BadRequest
from gateway.pipeline.normalize import parse_cache_control
from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream

CHAT = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
TENANT = {"authorization": f"Bearer {TENANT_KEY}", "content-type": "application/json"}


def _is_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error: dict[str, object] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("value", ["²", "³", "¹", "1²"])
def test_a_max_age_of_digits_that_are_not_ascii_is_a_400(gateway: Gateway, value: str) -> None:
    """``"²".isdigit()`` is True, and ``float("²")`` raised: a 500."""
    with pytest.raises(BadRequest):
        parse_cache_control(f"max-age={value}")
    header = f"max-age={value}".encode("latin-1")  # headers travel as latin-1
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={**TENANT, "cache-control": header},
    )
    assert _is_openai_error(response, 400)["param"] == "cache-control"


@pytest.mark.parametrize(
    "query",
    [
        {"since": "nan"},
        {"until": "nan"},
        {"since": "-inf"},
        {"until": "inf"},
        {"until": "1e20"},
        {"since": "-99999999999999"},
        {"since": "0", "until": "1e300"},
        {"since": "10000000000000000000000000000000000000000d"},
        {"since": "0001-01-01T00:00:00+01:00"},
    ],
)
def test_a_report_window_that_is_no_date_is_a_400(gateway: Gateway, query: dict[str, str]) -> None:
    """NaN, infinities and times past the years 1 to 9999 reached the ledger's day arithmetic,
    SQLite's 64-bit integers or ``datetime``: a 500."""
    response = httpx.get(
        f"{gateway.url}/admin/reports/cost",
        params=query,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    error = _is_openai_error(response, 400)
    assert error["param"] in query and "out of range" in str(error["message"])


def test_the_widest_report_window_still_answers(gateway: Gateway) -> None:
    response = httpx.get(
        f"{gateway.url}/admin/reports/cost",
        params={"since": "0001-01-01", "until": "9999-12-31T23:59:59"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200, response.text


def test_a_body_the_model_cannot_read_is_its_400_not_a_502(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    """A text part whose ``text`` is no string passes the gateway's checks (it forwards what it
    does not act on) and reaches the model, which refuses it: that refusal is passed on, once,
    as a 400; the fake upstream used to crash on it (a 500, retried, then a 502)."""
    part = {"type": "text", "text": 5}
    body = {"model": "auto", "messages": [{"role": "user", "content": [part]}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=TENANT)
    _is_openai_error(response, 400)
    assert len(primary.requests) == 1  # a client's error is not retried
