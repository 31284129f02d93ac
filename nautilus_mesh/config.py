"""Config loading: JSON files validated by pydantic models, errors raised as ConfigError."""

from __future__ import annotations

import os
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


class StrictModel(pydantic.BaseModel):
    """Base for config models: unknown keys are an error, values are immutable, a number is finite (NaN and
    Infinity, which JSON readers accept, are refused naming the field)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
