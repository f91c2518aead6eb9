from __future__ import annotations

import pytest

from gateway.errors import Unauthorized
from gateway.pipeline.authenticate import OPEN_TENANT, require_admin, tenant_of
from gateway.runtime.keys import KeyRing, bearer_key

RING = KeyRing(
    {"team-a": ["sk-aaaaaaaaaaaaaaaa"], "team-b": ["sk-bbbbbbbbbbbbbbbb", "sk-b2b2b2b2b2b2b2b2"]}
)


def test_keys_map_to_tenants() -> None:
    assert tenant_of(RING, "Bearer sk-aaaaaaaaaaaaaaaa") == "team-a"
    assert tenant_of(RING, "bearer  sk-b2b2b2b2b2b2b2b2 ") == "team-b"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic sk-aaaaaaaaaaaaaaaa",
        "Bearer sk-aaaaaaaaaaaaaaab",
        "Bearer sk-aaaaaaaaaaaaaaa",
    ],
)
def test_bad_or_missing_keys(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        tenant_of(RING, header)


def test_keys_are_held_hashed() -> None:
    assert "sk-aaaaaaaaaaaaaaaa" not in repr(RING._entries)
    assert all(len(digest) == 32 for digest, _ in RING._entries)


def test_no_tenants_is_open_access() -> None:
    assert tenant_of(KeyRing({}), None) == OPEN_TENANT


def test_admin() -> None:
    admins = KeyRing({"admin": ["sk-admin-0000000000"]})
    require_admin(admins, "Bearer sk-admin-0000000000")
    with pytest.raises(Unauthorized):
        require_admin(admins, "Bearer sk-aaaaaaaaaaaaaaaa")
    with pytest.raises(Unauthorized) as info:
        require_admin(KeyRing({"admin": []}), "Bearer sk-admin-0000000000")
    assert info.value.code == "admin_disabled"


def test_bearer_key() -> None:
    assert bearer_key("Bearer abc") == "abc"
    assert bearer_key("Token abc") is None
