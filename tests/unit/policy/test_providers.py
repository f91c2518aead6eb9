"""What each provider of a policy model cannot do without, refused by the policy check with the
key path, so that a model that could never be called is not loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.load import PolicyError, load_policy

HEAD = """\
version: 1
routes:
  - {name: default, to: m}
models:
  m:
"""


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"provider": "openai_compatible"}, "openai_compatible needs base_url"),
        ({"provider": "anthropic"}, "anthropic needs api_key"),
        ({"provider": "azure_openai", "base_url": "https://r.openai.azure.com"}, "needs api_key"),
        ({"provider": "azure_ml"}, "azure_ml needs base_url"),
        ({"provider": "bedrock"}, "bedrock needs aws"),
        ({"provider": "sagemaker"}, "sagemaker needs aws"),
        ({"provider": "vertex"}, "vertex needs gcp"),
    ],
)
def test_a_provider_without_what_it_needs_is_refused(
    tmp_path: Path, entry: dict[str, str], problem: str
) -> None:
    lines = "".join(f"    {key}: {value}\n" for key, value in {**entry, "model": "x"}.items())
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + lines)
    with pytest.raises(PolicyError) as info:
        load_policy(path, {})
    assert problem in str(info.value) and "models.m" in str(info.value)


def test_azure_with_entra_id_needs_no_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        HEAD + "    provider: azure_ml\n    base_url: https://e.inference.ml.azure.com/score\n"
        "    model: x\n    azure: {auth: entra_id}\n"
    )
    assert load_policy(path, {}).policy.models["m"].azure is not None
