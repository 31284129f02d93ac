"""Config loading: JSON files validated by pydantic models, errors raised as ConfigError."""

from __future__ import annotations

import os
import types
import typing
from decimal import Decimal
from typing import Annotated, TypeVar

import pydantic

from nautilus_mesh.auth import resolve_secret, resolve_sent_secret
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


Secret = Annotated[str, pydantic.AfterValidator(resolve_secret)]
"""A configured token: plain text, ``sha256:<hex>`` (checked tokens only), ``env:NAME`` or ``file:PATH``
(see ``nautilus_mesh.auth``)."""
SentSecret = Annotated[str, pydantic.AfterValidator(resolve_sent_secret)]
"""A token the service sends to a peer: plain text, ``env:NAME`` or ``file:PATH`` (a hash is refused)."""


_NUMBERS = (int, float, Decimal)


def _numeric(annotation: object) -> bool:
    """True for a number field (``int``, ``float``, ``Decimal``, optional or not): no JSON ``true`` may fill it."""
    if annotation is bool:
        return False
    if isinstance(annotation, type):
        return issubclass(annotation, _NUMBERS)
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(_numeric(a) for a in args)


class StrictModel(pydantic.BaseModel):
    """Base for config models: unknown keys are an error, values are immutable, a number is finite (NaN and
    Infinity, which JSON readers accept, are refused naming the field) and is not ``true`` or ``false`` (pydantic
    would read ``true`` as 1: ``"weight": true`` a full routing weight)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: object) -> object:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(field.alias or name, data.get(name))
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{name}: must be a number, got {str(value).lower()}")
        return data


def validate_config(cls: type[ModelT], data: object, *, source: str, at: str = "") -> ModelT:
    """Validate ``data`` as ``cls``; a failure becomes a ConfigError naming the source and each bad field's path
    (prefixed by ``at`` when ``data`` sits inside a larger document)."""
    try:
        return cls.model_validate(data)
    except ConfigError as exc:  # a validator's own ConfigError (with its code): named by the source at least
        raise ConfigError(f"{source}: {exc.message}", exc.details, code=exc.code) from None
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in ([at] if at else []) + list(e['loc'])) or '<root>'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_config(cls: type[ModelT], path: str | os.PathLike[str]) -> ModelT:
    """Load and validate a JSON config file."""
    return validate_config(cls, load_json_file(path), source=str(path))
