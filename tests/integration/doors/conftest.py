"""What the door tests share: a client of the official anthropic SDK on the test gateway."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.conftest import TENANT_KEY, Gateway


@pytest.fixture
def anthropic_client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=TENANT_KEY, max_retries=0, timeout=30
    ) as client:
        yield client
