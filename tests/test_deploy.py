"""compose.yaml, the Dockerfile and deploy/ checked by structure, since no container engine runs
here: the services and profiles, volumes, healthchecks, that every command our image runs is a
real CLI command with real flags (asked of the installed console scripts), and that the
Prometheus targets and the collector endpoint are the compose services' names and ports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
OUR_IMAGE = "llm-gateway"
LOCAL_TIERS = {"local-engine": "gpu", "local-engine-cpu": "cpu", "vllm": "vllm"}
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def expand(value: str) -> str:
    """Compose's ``${VAR:-default}`` as it reads with none of the variables set."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load(ROOT / "compose.yaml")
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def command(service: dict[str, Any]) -> list[str]:
    return [expand(str(part)) for part in service["command"]]


def option(args: list[str], flag: str) -> str:
    """The value after ``flag`` (``--port 8001`` or ``--port=8001``)."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def listening_port(service: dict[str, Any]) -> int:
    return int(option(command(service), "--port"))


def names(service: dict[str, Any], key: str) -> set[str]:
    """A service's own name is added by the caller; this is its network aliases."""
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return set()
    return {alias for net in networks.values() for alias in (net or {}).get(key, [])}


def hosts(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every name a container answers to inside the network -> its service."""
    out = {name: name for name in services}
    for name, service in services.items():
        for alias in names(service, "aliases"):
            out[alias] = name
    return out


def healthcheck_url(service: dict[str, Any]) -> tuple[int, str]:
    test = " ".join(str(part) for part in service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", test)
    assert match, test
    return int(match.group(1)), match.group(2)


def test_the_services_and_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "redis",
        "gateway",
        "local-engine",
        "local-engine-cpu",
        "vllm",
        "otel-collector",
        "prometheus",
    }
    for name, profile in LOCAL_TIERS.items():
        assert services[name]["profiles"] == [profile]
    for name in ("redis", "gateway", "otel-collector", "prometheus"):
        assert "profiles" not in services[name], f"{name} must run in every profile"


def test_redis_persists_append_only_to_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    args = command(redis)
    assert args[0] == "redis-server" and option(args, "--appendonly") == "yes"
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_the_gateway_scales_out_on_the_shared_redis(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    assert gateway["build"] == "." and (ROOT / "Dockerfile").is_file()
    env = {k: expand(str(v)) for k, v in gateway["environment"].items()}
    assert urlsplit(env["GATEWAY_REDIS_URL"]).hostname == "redis"
    assert urlsplit(env["GATEWAY_REDIS_URL"]).port == 6379
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    # Several replicas: no fixed name, and a range of host ports rather than one.
    for name, service in services.items():
        assert "container_name" not in service, name
    (published,) = gateway["ports"]
    host, container = published.rsplit(":", 1)
    assert re.fullmatch(r"\d+-\d+", host.split(":")[-1]), "one host port per replica"
    assert int(container) == listening_port(gateway)
    # The policy comes from ./policies, and the one named exists there.
    assert "./policies:/policies:ro" in gateway["volumes"]
    policy = env["GATEWAY_POLICY"]
    assert policy.startswith("/policies/")
    assert (ROOT / "policies" / policy.removeprefix("/policies/")).is_file()
    assert env["GATEWAY_DATA_DIR"] == "/data" and "gateway-data:/data" in gateway["volumes"]
    assert healthcheck_url(gateway) == (listening_port(gateway), "/readyz")


def test_the_local_tiers_answer_as_local_model(services: dict[str, dict[str, Any]]) -> None:
    gateway_env = {k: expand(str(v)) for k, v in services["gateway"]["environment"].items()}
    upstream = urlsplit(gateway_env["LOCAL_MODEL_BASE_URL"])
    for name in LOCAL_TIERS:
        service = services[name]
        assert upstream.hostname in names(service, "aliases"), name
        assert listening_port(service) == upstream.port, name
    assert option(command(services["local-engine"]), "--device") == "cuda"
    assert option(command(services["local-engine-cpu"]), "--device") == "cpu"
    assert "deploy" not in services["local-engine-cpu"]
    for name in ("local-engine", "vllm"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")
    served = option(command(services["vllm"]), "--served-model-name")
    assert served == gateway_env["LOCAL_MODEL_NAME"]
    assert option(command(services["local-engine"]), "--model") == gateway_env["LOCAL_MODEL_NAME"]
    assert healthcheck_url(services["local-engine"]) == (upstream.port, "/healthz")
    assert healthcheck_url(services["local-engine-cpu"]) == (upstream.port, "/healthz")
    assert healthcheck_url(services["vllm"]) == (upstream.port, "/health")
    assert services["local-engine"]["build"]["args"]["TORCH_INDEX"].endswith(("cu128", "cu126"))


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {
        str(volume).split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not str(volume).startswith((".", "/"))
    }
    assert used == declared
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


@cache
def help_text(script: str, subcommand: tuple[str, ...]) -> str:
    """``script subcommand... --help`` from the installed console script, plain and wide."""
    executable = Path(sys.executable).parent / script
    assert executable.exists(), f"the console script {script} is not installed"
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [str(executable), *subcommand, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{script} {' '.join(subcommand)} --help: {result.stderr}"
    return result.stdout


def our_commands(services: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    found = [
        (name, command(service))
        for name, service in services.items()
        if str(service.get("image", "")).startswith(OUR_IMAGE)
    ]
    dockerfile = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    found.append(("Dockerfile", json.loads(cmd)))
    return found


def test_every_command_of_our_image_is_a_real_cli_command(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = our_commands(services)
    assert {name for name, _ in checked} == {
        "gateway",
        "local-engine",
        "local-engine-cpu",
        "Dockerfile",
    }
    for name, args in checked:
        assert_real_cli_command(name, args)


def assert_real_cli_command(name: str, args: list[str]) -> None:
    """``args`` runs one of our console scripts' subcommands with options it has."""
    script, rest = args[0], args[1:]
    assert script in ("gateway", "local-engine"), name
    words = [a for a in rest if not a.startswith("-")]
    subcommand = (words[0],) if words else ()
    assert subcommand and rest[0] == subcommand[0], f"{name}: {args}"
    text = help_text(script, subcommand)
    assert "Usage:" in text
    for flag in (a.split("=", 1)[0] for a in rest if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"{name}: {script} {subcommand[0]} has no option {flag}"
        )


def test_prometheus_scrapes_the_services_where_they_listen(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    config_path = option(command(prometheus), "--config.file")
    assert f"./deploy/prometheus.yml:{config_path}:ro" in prometheus["volumes"]
    config = load(ROOT / "deploy" / "prometheus.yml")
    collector = load(ROOT / "deploy" / "otel-collector.yaml")
    ports = {
        "gateway": {listening_port(services["gateway"])},
        "otel-collector": {
            int(collector["service"]["telemetry"]["metrics"]["address"].rsplit(":", 1)[1]),
            int(collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]),
        },
        **{name: {listening_port(services[name])} for name in LOCAL_TIERS},
    }
    known = hosts(services)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "local-model", "otel-collector"}
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in known, f"{job['job_name']}: no service answers as {host}"
                assert int(port) in ports[known[host]], f"{job['job_name']}: {target}"
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services
                assert sd["port"] in ports[name]
    # Every local tier is scraped under the one alias.
    (target,) = jobs["local-model"]["static_configs"][0]["targets"]
    assert {known[target.split(":")[0]]} <= set(LOCAL_TIERS)


def test_the_gateway_exports_to_the_collector(services: dict[str, dict[str, Any]]) -> None:
    collector_service = services["otel-collector"]
    config_arg = next(a for a in command(collector_service) if a.startswith("--config="))
    config_path = config_arg.split("=", 1)[1]
    assert f"./deploy/otel-collector.yaml:{config_path}:ro" in collector_service["volumes"]
    collector = load(ROOT / "deploy" / "otel-collector.yaml")
    endpoint = urlsplit(services["gateway"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector" and endpoint.hostname in services
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert int(http.rsplit(":", 1)[1]) == endpoint.port
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["processors"]) <= set(collector["processors"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])


def test_the_dockerfile_is_slim_non_root_with_a_data_volume() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS build$", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert 'VOLUME ["/data"]' in text and "GATEWAY_DATA_DIR=/data" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url', text)
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert re.search(r"^HEALTHCHECK .*\n.*8080/readyz", text, flags=re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def _published_hosts(service: dict[str, Any]) -> list[str]:
    """The host address of each published port ("" when published on every interface)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append(str(port.get("host_ip", "")))
            continue
        parts = str(port).rsplit(":", 2)
        out.append(parts[0].strip("[]") if len(parts) == 3 else "")
    return out


def _policy_has_tenants(service: dict[str, Any]) -> bool:
    """The policy the gateway serves with none of compose's variables set (its default)."""
    in_container = expand(str(service["environment"]["GATEWAY_POLICY"]))
    mounts = [str(v).split(":") for v in service.get("volumes", [])]
    for source, target, *_ in (m for m in mounts if len(m) >= 2):
        if in_container.startswith(target.rstrip("/") + "/") and source.startswith("./"):
            path = ROOT / source / in_container[len(target.rstrip("/")) + 1 :]
            return bool((load(path) or {}).get("tenants"))
    raise AssertionError(f"{in_container} is not in a mounted folder of the repository")


def test_an_open_policy_is_never_published_beyond_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    """Closed by default: a policy without tenants answers anyone who can connect."""
    gateway = services["gateway"]
    hosts_ = _published_hosts(gateway)
    assert hosts_, "the gateway publishes no port"
    if not _policy_has_tenants(gateway):
        wide = [h for h in hosts_ if h not in ("127.0.0.1", "::1", "localhost")]
        assert not wide, f"a tenantless policy is published on {wide or 'every interface'}"


@pytest.mark.parametrize(
    ("port", "published_on"),
    [
        ("8080:8080", ""),
        ("0.0.0.0:8080:8080", "0.0.0.0"),
        ("127.0.0.1:8080-8083:8080", "127.0.0.1"),
    ],
)
def test_published_hosts_are_read_as_compose_reads_them(port: str, published_on: str) -> None:
    assert _published_hosts({"ports": [port]}) == [published_on]


def test_prometheus_scrapes_the_gateway_with_the_admin_key(compose: dict[str, Any]) -> None:
    config = load(ROOT / "deploy" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert compose["secrets"][secret] == {"environment": "GATEWAY_ADMIN_KEY"}
    assert secret in compose["services"]["prometheus"]["secrets"]
    assert compose["services"]["gateway"]["stop_grace_period"]
