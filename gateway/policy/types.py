"""The building blocks of the policy's schema: strict frozen models and the value types
(names, money per million tokens, durations) every part of it uses."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", max_length=128)]
PerMillion = Annotated[Decimal, Field(ge=0, description="USD per million tokens")]
Seconds = Annotated[float, Field(gt=0)]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """``90``, ``"90s"``, ``"15m"``, ``"24h"`` or ``"7d"`` as seconds."""
    if isinstance(value, str) and value[-1:] in _UNITS and value[:-1].strip():
        try:
            return float(value[:-1]) * _UNITS[value[-1]]
        except ValueError:
            return value
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Category = Literal["code", "math", "reasoning", "creative", "chat", "other"]
"""The classifier's categories (``gateway.ml.classifier.CATEGORIES``)."""


def one_or_many(value: object) -> object:
    """``category: code`` is short for ``category: [code]``."""
    return (value,) if isinstance(value, str) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
