"""Reloading the policy: on demand and on file change; a bad file never replaces a good one."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def reload(gateway: Gateway, headers: dict[str, str] | None = ADMIN) -> httpx.Response:
    return httpx.post(f"{gateway.url}/admin/policy/reload", headers=headers)


def route_of(gateway: Gateway) -> str:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )  # type: ignore[arg-type]
    return raw.headers["x-gateway-route"]


def test_reload_applies_a_valid_policy(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    assert route_of(gateway) == "default"
    gateway.policy_path.write_text(
        policy_text(primary, backup, extra_routes="- {name: everything-to-backup, to: backup}\n")
    )
    response = reload(gateway)
    assert response.status_code == 200
    assert response.json()["status"] == "reloaded"
    assert response.json()["version"] != response.json()["previous"]
    assert route_of(gateway) == "everything-to-backup"


def test_invalid_policy_is_refused_and_the_old_one_stays(gateway: Gateway) -> None:
    before = httpx.get(f"{gateway.url}/readyz", headers=ADMIN).json()["policy"]["version"]
    gateway.policy_path.write_text(
        gateway.policy_path.read_text()
        .replace("to: main", "to: nowhere")
        .replace("model: upstream-main", "model: upstream-main\n    colour: red")
    )
    response = reload(gateway)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_policy"
    problems = error["problems"]
    assert any(":7:5: $.models.main.colour: unknown key" in p for p in problems), problems
    assert httpx.get(f"{gateway.url}/readyz", headers=ADMIN).json()["policy"]["version"] == before
    assert route_of(gateway) == "default"


def test_reload_needs_the_admin_key(gateway: Gateway) -> None:
    assert reload(gateway, None).status_code == 401
    assert reload(gateway, {"authorization": f"Bearer {TENANT_KEY}"}).status_code == 401
    shown = httpx.get(f"{gateway.url}/admin/policy", headers=ADMIN)
    assert shown.status_code == 200
    assert "sk-upstream-secret" not in shown.text and TENANT_KEY not in shown.text
    assert shown.json()["policy"]["models"]["main"]["api_key"] == "[redacted]"


def test_admin_api_is_off_without_an_admin_key(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, tenants=False))
    response = reload(gw)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "admin_disabled"


def test_open_access_without_tenants(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup, tenants=False))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="anything", max_retries=0)
    with client:
        assert client.chat.completions.create(model="auto", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_file_change_is_picked_up(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), watch=True)
    time.sleep(0.3)  # let the watcher start
    version = httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"]
    gw.policy_path.write_text("version: 1\nmodels: {oops")  # a broken save is ignored
    time.sleep(1.0)
    assert httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"] == version
    gw.policy_path.write_text(
        policy_text(primary, backup, extra_routes="- {name: watched, to: backup}\n")
    )
    deadline = time.monotonic() + 10
    while httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"] == version:
        assert time.monotonic() < deadline, "the changed policy was not loaded"
        time.sleep(0.1)
    assert route_of(gw) == "watched"


def _configmap_swap(folder: Path, name: str, text: str, version: int) -> None:
    """Publish ``text`` as Kubernetes publishes a changed ConfigMap in a volume: write a new
    timestamped folder, point a fresh ``..data_tmp`` link at it, rename that over ``..data``,
    and remove the old folder (``name`` itself is a link to ``..data/name`` throughout)."""
    fresh = folder / f"..v{version}"
    fresh.mkdir()
    (fresh / name).write_text(text)
    (folder / "..data_tmp").symlink_to(fresh.name, target_is_directory=True)
    old = (folder / "..data").resolve() if (folder / "..data").exists() else None
    os.replace(folder / "..data_tmp", folder / "..data")
    if old is not None:
        shutil.rmtree(old)


def test_a_configmap_volume_update_is_picked_up(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """The file name stays a link to ``..data/<name>``; only the ``..data`` link changes."""
    gw = start_gateway(policy_text(primary, backup), watch=True)
    time.sleep(0.3)  # let the watcher start
    folder, name = gw.policy_path.parent, gw.policy_path.name
    version = httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"]
    _configmap_swap(folder, name, gw.policy_path.read_text(), 1)
    link = folder / f"{name}.link"
    link.symlink_to(f"..data/{name}")
    os.replace(link, gw.policy_path)  # from here on, as mounted by the kubelet
    time.sleep(1.0)
    assert httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"] == version
    changed = policy_text(primary, backup, extra_routes="- {name: mounted, to: backup}\n")
    _configmap_swap(folder, name, changed, 2)
    deadline = time.monotonic() + 10
    while httpx.get(f"{gw.url}/readyz", headers=ADMIN).json()["policy"]["version"] == version:
        assert time.monotonic() < deadline, "the ConfigMap's new policy was not loaded"
        time.sleep(0.1)
    assert route_of(gw) == "mounted"
