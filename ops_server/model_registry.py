"""The model registry: strategies, their models, versions, routing weights and modes.

A JSON file, validated on load and replaced atomically on change. Routing weights over a
strategy's models sum to 1 (+-0.001) or the change is refused with the offending weights.

    {"strategies": {"momentum": {
        "stable_model": "momentum_v1",
        "models": {"momentum_v1": {"version": "1.0.0", "instruments": ["BTC-USD"], "weight": 1.0, "mode": "LIVE"},
                   "momentum_v2": {"version": "2.0.0", "instruments": ["BTC-USD"], "weight": 0.0, "mode": "SHADOW"}},
        "canary": {"model_id": "momentum_v2", "schedule": [5, 10, 25, 50, 100]}}}}
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pydantic

from nautilus_mesh.config import StrictModel, validate_config
from nautilus_mesh.errors import ConfigError, NotFoundError, ValidationError
from nautilus_mesh.files import atomic_write_text, load_json_file
from ops_server.canary.config import CanaryBlock

log = logging.getLogger(__name__)

WEIGHT_TOLERANCE = 0.001
PAPER_SUFFIX = "@paper"

_V = TypeVar("_V")


def lookup(table: Mapping[str, _V], key: str, code: str, message: str, *, field: str, detail: str = "") -> _V:
    """``table[key]``, or a NotFoundError ``code`` naming the request ``field`` when the key is unknown.

    ``message`` is formatted with the key's repr (``"unknown model {!r}"``) only when the key is missing; with
    ``detail`` the details carry the key under that name.
    """
    try:
        return table[key]
    except KeyError:
        raise NotFoundError(code, message.format(key), {detail: key} if detail else None, field=field) from None


def paper_book(model_id: str) -> str:
    """The id of a model's paper book: its shadow trading, measured apart from any live position."""
    return model_id if model_id.endswith(PAPER_SUFFIX) else f"{model_id}{PAPER_SUFFIX}"


def is_paper_book(model_id: str) -> bool:
    return model_id.endswith(PAPER_SUFFIX)


class RoutingMode(StrEnum):
    LIVE = "LIVE"
    SHADOW = "SHADOW"
    DISABLED = "DISABLED"


class ModelSpec(StrictModel):
    version: str = "1"
    """The model's version label (shown by ListModels)."""
    instruments: tuple[str, ...] = pydantic.Field(min_length=1)
    """Instruments the model may signal for."""
    weight: float = pydantic.Field(ge=0.0, le=1.0)
    """Routing weight within its strategy, a fraction in [0, 1]; a strategy's weights sum to 1 (+-0.001)."""
    mode: RoutingMode = RoutingMode.LIVE
    """LIVE (live venue), SHADOW (paper venue only) or DISABLED (signals refused)."""


class StrategySpec(StrictModel):
    stable_model: str
    """The model that carries the strategy's capital when no canary runs; one of ``models``."""
    models: dict[str, ModelSpec] = pydantic.Field(min_length=1)
    """Model id -> its routing. A model id may not end with ``@paper``: that suffix names paper books (a shadow model's
    book, the stable model's paper twin)."""
    canary: CanaryBlock | None = None
    """Canary settings (``model_id`` plus the canary controller's config), when a canary runs."""


class RegistryFile(StrictModel):
    strategies: dict[str, StrategySpec] = pydantic.Field(min_length=1)
    """Strategy id -> its models and canary."""


@dataclass(frozen=True)
class ModelRoute:
    """Everything the router needs about one model."""

    model_id: str
    strategy_id: str
    version: str
    instruments: frozenset[str]
    weight: float
    mode: RoutingMode
    stable: bool

    @property
    def book(self) -> str:
        """Where this model's orders are booked and measured: its paper book while in SHADOW."""
        return paper_book(self.model_id) if self.mode is RoutingMode.SHADOW else self.model_id


def check_weights(strategy_id: str, weights: Mapping[str, float]) -> None:
    """Refuse routing weights that are negative, above 1, or do not sum to 1 (+-0.001)."""
    bad = {m: w for m, w in weights.items() if not 0.0 <= w <= 1.0}
    total = sum(weights.values())
    if bad or abs(total - 1.0) > WEIGHT_TOLERANCE:
        shown = ", ".join(f"{m}={w:g}" for m, w in sorted(weights.items()))
        raise ValidationError(
            "INVALID_WEIGHTS",
            f"routing weights of strategy {strategy_id!r} must each be in [0, 1] and sum to 1 (+-{WEIGHT_TOLERANCE}); "
            f"got {shown} (sum {total:.6g})",
            {"strategy": strategy_id, "sum": f"{total:.6g}", **{m: f"{w:g}" for m, w in weights.items()}},
            field="weights",
        )


def _validate(data: RegistryFile, source: str) -> None:
    seen: dict[str, str] = {}
    for sid, strategy in data.strategies.items():
        if strategy.stable_model not in strategy.models:
            raise ConfigError(
                f"{source}: strategy {sid!r}: stable_model {strategy.stable_model!r} is not one of its models"
            )
        for mid in strategy.models:
            if is_paper_book(mid):
                raise ConfigError(
                    f"{source}: strategy {sid!r}: model id {mid!r} ends with {PAPER_SUFFIX!r}, which names paper books"
                )
            if mid in seen:
                raise ConfigError(f"{source}: model {mid!r} appears in strategies {seen[mid]!r} and {sid!r}")
            seen[mid] = sid
        try:
            check_weights(sid, {m: s.weight for m, s in strategy.models.items()})
        except ValidationError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None
        if strategy.canary is not None and strategy.canary.model_id not in strategy.models:
            raise ConfigError(f"{source}: strategy {sid!r}: canary model_id must be one of its models")


class ModelRegistry:
    """The loaded registry; thread-safe reads, validated atomic updates.

    Args:
        data: the validated registry.
        path: where changes are persisted (atomically); None keeps them in memory.
    """

    def __init__(self, data: RegistryFile, path: str | os.PathLike[str] | None = None) -> None:
        _validate(data, str(path or "registry"))
        self._data = data
        self._path = path
        self._lock = threading.Lock()
        self._routes = self._build_routes(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelRegistry:
        return cls(validate_config(RegistryFile, load_json_file(path), source=str(path)), path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRegistry:
        return cls(validate_config(RegistryFile, data, source="registry"))

    @staticmethod
    def _build_routes(data: RegistryFile) -> dict[str, ModelRoute]:
        return {
            mid: ModelRoute(
                model_id=mid,
                strategy_id=sid,
                version=spec.version,
                instruments=frozenset(spec.instruments),
                weight=spec.weight,
                mode=spec.mode,
                stable=mid == strategy.stable_model,
            )
            for sid, strategy in data.strategies.items()
            for mid, spec in strategy.models.items()
        }

    @property
    def data(self) -> RegistryFile:
        return self._data

    def route(self, model_id: str) -> ModelRoute:
        """The route of a model; NotFoundError (``UNKNOWN_MODEL``) for an unknown id."""
        return lookup(
            self._routes, model_id, "UNKNOWN_MODEL", "unknown model {!r}", field="model_id", detail="model_id"
        )

    def knows(self, model_id: str) -> bool:
        return model_id in self._routes

    def routes(self) -> list[ModelRoute]:
        return list(self._routes.values())

    def strategies(self) -> list[str]:
        return list(self._data.strategies)

    def model_ids(self) -> frozenset[str]:
        """Every model of every strategy."""
        return frozenset(self._routes)

    def models_of(self, strategy_id: str) -> list[ModelRoute]:
        return [r for r in self._routes.values() if r.strategy_id == strategy_id]

    def instruments(self) -> frozenset[str]:
        return frozenset(i for r in self._routes.values() for i in r.instruments)

    def _replace(self, data: RegistryFile) -> None:
        _validate(data, str(self._path or "registry"))
        if self._path is not None:
            atomic_write_text(self._path, json.dumps(data.model_dump(mode="json"), indent=2) + "\n")
        self._data = data
        self._routes = self._build_routes(data)

    def set_weights(
        self,
        strategy_id: str,
        weights: Mapping[str, float],
        *,
        modes: Mapping[str, RoutingMode] | None = None,
        stable_model: str | None = None,
    ) -> None:
        """Replace a strategy's routing weights (and optionally modes and stable model), validated and persisted."""
        with self._lock:
            strategy = lookup(
                self._data.strategies, strategy_id, "UNKNOWN_STRATEGY", "unknown strategy {!r}", field="strategy_id"
            )
            unknown = sorted(set(weights) - set(strategy.models))
            if unknown:
                raise NotFoundError(
                    "UNKNOWN_MODEL", f"strategy {strategy_id!r} has no model(s) {', '.join(unknown)}", field="weights"
                )
            full = {m: weights.get(m, 0.0) for m in strategy.models}
            check_weights(strategy_id, full)
            models = {
                m: spec.model_copy(update={"weight": full[m], "mode": (modes or {}).get(m, spec.mode)})
                for m, spec in strategy.models.items()
            }
            new_strategy = strategy.model_copy(
                update={"models": models, "stable_model": stable_model or strategy.stable_model}
            )
            self._replace(
                self._data.model_copy(update={"strategies": {**self._data.strategies, strategy_id: new_strategy}})
            )
        log.info("[REGISTRY] strategy %s weights %s", strategy_id, {m: round(w, 4) for m, w in full.items()})

    def apply_weights_from(self, fresh: ModelRegistry, *, skip: Callable[[str], bool]) -> list[str]:
        """Take the weights and modes of ``fresh`` (a reloaded registry file) for every strategy but those ``skip``
        names; returns the strategies updated.

        Raises:
            ConfigError: ``fresh`` adds or removes a strategy or a model (that needs a restart); nothing is changed
                then.
        """
        added, removed = (
            set(fresh.data.strategies) - set(self.strategies()),
            set(self.strategies()) - set(fresh.data.strategies),
        )
        if added or removed:
            change = ", ".join([*(f"adds {s!r}" for s in sorted(added)), *(f"removes {s!r}" for s in sorted(removed))])
            raise ConfigError(f"reloading {change}; restart ops to add or remove strategies")
        for strategy_id, spec in fresh.data.strategies.items():
            if set(spec.models) != {r.model_id for r in self.models_of(strategy_id)}:
                raise ConfigError(
                    f"reloading changes the models of strategy {strategy_id!r}; restart ops to add or remove models"
                )
        updated = []
        for strategy_id, spec in fresh.data.strategies.items():
            if skip(strategy_id):
                continue
            self.set_weights(
                strategy_id,
                {m: s.weight for m, s in spec.models.items()},
                modes={m: s.mode for m, s in spec.models.items()},
            )
            updated.append(strategy_id)
        return updated
