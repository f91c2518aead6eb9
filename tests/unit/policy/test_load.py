"""The policy loader: every problem with its file:line:col and key path."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.policy.load import PolicyError, load_policy

GOOD = """\
version: 1
models:
  small:
    provider: openai_compatible
    base_url: http://127.0.0.1:8001/v1
    model: tiny
    price: {input_per_mtok: 0.02, output_per_mtok: 0.1}
  large:
    provider: openai_compatible
    base_url: ${LARGE_URL:-https://api.example.com/v1}
    api_key: ${LARGE_KEY}
    model: big
    price: {input_per_mtok: 2.50, output_per_mtok: 10.00}
    fallbacks: [small]
routes:
  - {name: tools, when: {has_tools: true}, to: large}
  - {name: default, to: small}
"""
ENV = {"LARGE_KEY": "sk-from-the-environment"}


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return load_policy(path, ENV if env is None else env)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(tmp_path, text, env)
    prefix = str(tmp_path / "policy.yaml") + ":"
    return [str(p).removeprefix(prefix) for p in info.value.problems]


def test_a_good_policy_loads_with_exact_prices(tmp_path: Path) -> None:
    loaded = load(tmp_path, GOOD)
    large = loaded.policy.models["large"]
    assert large.api_key == "sk-from-the-environment"
    assert large.base_url == "https://api.example.com/v1"
    assert large.price is not None and large.price.input_per_mtok == Decimal("2.50")
    assert loaded.policy.models["small"].price.input_per_mtok == Decimal("0.02")  # type: ignore[union-attr]
    assert loaded.warnings == ()


def test_env_default_and_override(tmp_path: Path) -> None:
    env = {**ENV, "LARGE_URL": "http://override/v1"}
    assert load(tmp_path, GOOD, env).policy.models["large"].base_url == "http://override/v1"


def test_dollar_escape(tmp_path: Path) -> None:
    text = GOOD.replace("model: tiny", "model: price$$1")
    assert load(tmp_path, text).policy.models["small"].model == "price$1"


def test_missing_env_variable(tmp_path: Path) -> None:
    assert problems(tmp_path, GOOD, {}) == [
        "11:5: $.models.large.api_key: environment variable LARGE_KEY is not set"
    ]


def test_unknown_keys_and_bad_values_are_all_reported(tmp_path: Path) -> None:
    text = (
        GOOD.replace("model: tiny", "model: tiny\n    temprature: 0.2")
        .replace("output_per_mtok: 10.00", "output_per_mtok: -1")
        .replace("version: 1", "version: 1\nextra: x")
    )
    assert problems(tmp_path, text) == [
        "2:1: $.extra: unknown key",
        "8:5: $.models.small.temprature: unknown key",
        "15:35: $.models.large.price.output_per_mtok: Input should be greater than or equal to 0",
    ]


def test_missing_required_keys_point_at_their_parent(tmp_path: Path) -> None:
    text = GOOD.replace("    model: big\n", "")
    assert problems(tmp_path, text) == ["8:3: $.models.large.model: Field required"]


def test_cross_checks(tmp_path: Path) -> None:
    text = (
        GOOD.replace("fallbacks: [small]", "fallbacks: [small, ghost, large]").replace(
            "to: small}", "to: tiny}\n  - {name: tools, to: small}"
        )
        + "baseline_model: huge\n"
    )
    assert problems(tmp_path, text) == [
        "14:24: $.models.large.fallbacks[1]: unknown model 'ghost'",
        "14:31: $.models.large.fallbacks[2]: a model cannot fall back to itself",
        "17:21: $.routes[1].to: unknown model 'tiny'",
        "18:6: $.routes[2].name: duplicate route name 'tools'",
        "19:1: $.baseline_model: unknown model 'huge'",
    ]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\nmodels: {a: [1, 2}\n") == [
        "2:18: $: invalid YAML: expected ',' or ']', but got '}'"
    ]


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD + "routes: []\n")
    assert problem.startswith("18:1: $: invalid YAML: found duplicate key")


def test_not_a_mapping_and_unreadable(tmp_path: Path) -> None:
    assert problems(tmp_path, "- 1\n") == ["1:1: $: the policy must be a mapping"]
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "missing.yaml", {})


def test_tenant_keys_shared_or_short(tmp_path: Path) -> None:
    text = GOOD + (
        'tenants:\n  a: {api_keys: ["sk-shared-key-0123456789"]}\n'
        '  b: {api_keys: ["sk-shared-key-0123456789", "short"]}\n'
    )
    assert problems(tmp_path, text) == [
        "20:46: $.tenants.b.api_keys[1]: String should have at least 16 characters"
    ]
    text = text.replace(', "short"', "")
    assert problems(tmp_path, text) == [
        "20:18: $.tenants.b.api_keys[0]: key already belongs to tenant 'a'"
    ]


def test_literal_secrets_are_warnings(tmp_path: Path) -> None:
    text = (
        GOOD.replace("${LARGE_KEY}", "sk-literal-0123456789") + 'admin: {api_keys: ["${ADMIN}"]}\n'
    )
    loaded = load(tmp_path, text, {"ADMIN": "sk-admin-from-env-0000"})
    assert [str(w).split(":", 1)[1] for w in loaded.warnings] == [
        "11:5: $.models.large.api_key: a literal secret; use an ${ENV_VAR} reference"
    ]


def test_literal_secrets_in_headers_and_base_urls_are_warnings(tmp_path: Path) -> None:
    text = GOOD.replace(
        "base_url: http://127.0.0.1:8001/v1",
        "base_url: http://svc:hunter2@127.0.0.1:8001/v1\n"
        "    headers: {api-key: literal-1, x-api-key: '${XK}', Authorization: literal-3,"
        " anthropic-version: '2023-06-01'}",
    ).replace(
        "${LARGE_URL:-https://api.example.com/v1}",
        "https://${U}:${P}@api.example.com/v1?key=literal-4&api-version=1",
    )
    env = {**ENV, "XK": "from-env", "U": "u", "P": "p"}
    loaded = load(tmp_path, text, env)
    assert sorted(str(w).split(":", 1)[1].split(": a literal")[0] for w in loaded.warnings) == [
        "11:5: $.models.large.base_url",  # its user info is referenced, its ?key= is not
        "5:5: $.models.small.base_url",
        "6:15: $.models.small.headers.api-key",
        "6:55: $.models.small.headers.Authorization",
    ]
    referenced = text.replace("svc:hunter2", "${U}:${P}").replace("literal-4", "${XK}")
    loaded = load(tmp_path, referenced, env)
    assert [str(w).split(": ")[1] for w in loaded.warnings] == [
        "$.models.small.headers.api-key",
        "$.models.small.headers.Authorization",
    ]


def test_split_and_alias_checks(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  - {name: default, to: small}",
        "  - {name: ab, to: small, split: {to: nowhere, share: 0.1}}\n"
        "  - {name: alias, when: {model: [large, gpt-4o]}, to: small}\n"
        "  - {name: half, to: small, split: {to: large, share: 1.5}}",
    )
    assert problems(tmp_path, text) == [
        "19:48: $.routes[3].split.share: Input should be less than 1"
    ]
    text = text.replace("share: 1.5", "share: 0.5")
    assert problems(tmp_path, text) == [
        "17:35: $.routes[1].split.to: unknown model 'nowhere'",
        "18:34: $.routes[2].when.model[0]: 'large' is a policy model: requests naming it are "
        "forced to it",
    ]


def test_unpriced_models_are_warned_about(tmp_path: Path) -> None:
    text = GOOD.replace("    price: {input_per_mtok: 0.02, output_per_mtok: 0.1}\n", "")
    loaded = load(tmp_path, text)
    assert [str(w).split(":", 1)[1] for w in loaded.warnings] == [
        "3:3: $.models.small: no price: its requests are recorded with an unknown (null) cost, "
        "never zero"
    ]
