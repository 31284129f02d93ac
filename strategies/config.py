"""Strategy configuration: the model registry and the validated ``strategies.json`` loader.

``strategies.json`` lists the ops and engine addresses, the minimum target change that is
worth a signal, and one entry per strategy process-side runner: its name, its strategy token
and the models it runs (id, kind, instruments, parameters). Every problem is a ConfigError
naming the offending field.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pydantic

from nautilus_mesh.config import SentSecret, StrictModel, load_config
from nautilus_mesh.errors import ConfigError
from strategies.mean_reversion import MeanReversionConfig, MeanReversionModel
from strategies.momentum import MomentumConfig, MomentumModel


class Model(Protocol):
    """What the runtime needs from a model."""

    def on_price(self, instrument: str, mid: float, ts_ns: int) -> float | None:
        """Feed one mid; return a target exposure in [-1, 1], or None while there is not enough data."""
        ...


@dataclass(frozen=True)
class ModelKind:
    """A registered model kind: its frozen config dataclass and a factory taking that config."""

    config_cls: type[Any]
    factory: typing.Callable[[Any], Model]


MODEL_KINDS: dict[str, ModelKind] = {
    "momentum": ModelKind(MomentumConfig, MomentumModel),
    "mean_reversion": ModelKind(MeanReversionConfig, MeanReversionModel),
}
"""Model kind name (the ``kind`` key in strategies.json) -> config class and model class."""


class ModelEntry(StrictModel):
    """One model run by a strategy."""

    model_id: str = pydantic.Field(min_length=1, max_length=64)
    """The model's id in the registry; unique across strategies."""
    kind: str
    """The model kind: ``momentum`` or ``mean_reversion`` (the keys of ``MODEL_KINDS``)."""
    instruments: list[str] = pydantic.Field(min_length=1)
    """Instruments whose quotes feed the model and that it signals for."""
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    """The kind's parameters (its config dataclass's fields); missing ones take their defaults."""


class StrategyEntry(StrictModel):
    """One strategy: a runner with one signal stream authenticated by ``token``."""

    name: str = pydantic.Field(min_length=1, max_length=64)
    """The strategy's name (the process is ``strategy-<name>``)."""
    token: SentSecret = pydantic.Field(min_length=1)
    """Strategy token sent as ``x-strategy-token``; bound to its models in ops.json. Plain text, ``env:NAME`` (an
    environment variable) or ``file:PATH`` (a file's first line), as every token field."""
    models: list[ModelEntry] = pydantic.Field(min_length=1)
    """The models this process runs, on one signal stream."""


class StrategiesConfig(StrictModel):
    """The whole ``strategies.json`` file."""

    ops_address: str = "127.0.0.1:50051"
    """host:port of ops (signals)."""
    engine_address: str = "127.0.0.1:50052"
    """host:port of the engine (quotes)."""
    min_target_change: float = pydantic.Field(0.05, ge=0.0, le=2.0)
    """Smallest move of a model's target (a fraction of its quota) worth a new signal."""
    refresh_seconds: float = pydantic.Field(0.0, ge=0.0)
    """Re-send an unchanged target after this many seconds (0 = never): ops re-sizes it against the
    current quota, so allocation and canary weight changes reach positions without a new target."""
    quote_venue: str = ""
    """Only quotes of this venue feed the models ("" = every venue the engine streams)."""
    metrics_host: str = "127.0.0.1"
    """Address the strategies' Prometheus /metrics server binds."""
    metrics_port: int | None = pydantic.Field(None, ge=0, le=65535)
    """Port of the strategies' /metrics (signals sent, decisions, signal-to-fill); None (the default) serves none."""
    strategies: list[StrategyEntry] = pydantic.Field(min_length=1)
    """The strategy processes, each with its models."""

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> StrategiesConfig:
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError("strategy names must be unique")
        model_ids = [m.model_id for s in self.strategies for m in s.models]
        if len(set(model_ids)) != len(model_ids):
            raise ValueError("model ids must be unique across strategies")
        return self


@dataclass(frozen=True)
class BuiltModel:
    """A model instance ready for the runtime."""

    model_id: str
    model: Model
    instruments: tuple[str, ...]


def _check_param_types(config_cls: type[Any], params: Mapping[str, Any], where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    known = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown parameter {key!r} (expected one of {sorted(known)})")
        expected = hints[key]
        # bool is an int subclass in Python; `"fast": true` is a typo, not a span.
        ok = not isinstance(value, bool) and (
            isinstance(value, expected) or (expected is float and isinstance(value, int))
        )
        if not ok:
            raise ConfigError(f"{where}: parameter {key!r} must be {expected.__name__}, got {value!r}")
        out[key] = float(value) if expected is float else value
    return out


def build_model(kind: str, params: Mapping[str, Any], *, where: str = "model") -> Model:
    """Instantiate a model of a registered kind from its JSON parameters.

    Raises:
        ConfigError: unknown kind, unknown parameter, wrong type or invalid value.
    """
    spec = MODEL_KINDS.get(kind)
    if spec is None:
        raise ConfigError(f"{where}: unknown model kind {kind!r} (known: {sorted(MODEL_KINDS)})")
    checked = _check_param_types(spec.config_cls, params, where)
    try:
        config = spec.config_cls(**checked)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec.factory(config)


def build_models(strategy: StrategyEntry) -> list[BuiltModel]:
    """The models of one strategy entry, instantiated."""
    return [
        BuiltModel(
            m.model_id,
            build_model(m.kind, m.params, where=f"strategy {strategy.name!r} model {m.model_id!r}"),
            tuple(m.instruments),
        )
        for m in strategy.models
    ]


def load_strategies(path: str | os.PathLike[str]) -> StrategiesConfig:
    """Load and fully validate ``strategies.json``, including every model's kind and parameters.

    Raises:
        ConfigError: the file is missing, malformed or describes an invalid model.
    """
    config = load_config(StrategiesConfig, path)
    for strategy in config.strategies:
        try:
            build_models(strategy)  # fail at load time, not when the runner starts
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", exc.details, code=exc.code) from None
    return config
