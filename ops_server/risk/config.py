"""Risk limits: what the ops rails enforce, read from the limits file (``config/demo/risk_limits.json``).

The file has three parts: ``global`` (gross exposure cap, stale-mark age, instrument allow-list), ``default_model``
(every model's limits) and ``models`` (per-model overrides merged over the default). Every field is validated and
an error names the file path and the field; unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file
from ops_server.risk.trading_state import TradingState, parse_state

__all__ = ["ModelLimits", "RiskLimits"]

_TOP_KEYS = frozenset({"global", "default_model", "models"})
_GLOBAL_KEYS = frozenset({"max_gross_exposure", "stale_mark_seconds", "allowed_instruments"})
_MODEL_KEYS = frozenset(
    {
        "max_order_notional",
        "max_position_qty",
        "order_rate_per_second",
        "order_burst",
        "max_daily_loss",
        "max_drawdown",
        "breach_state",
    }
)
_BREACH_STATES = frozenset({TradingState.REDUCING, TradingState.HALTED})
_ANY_INSTRUMENT = "*"


def _number(value: object, where: str) -> Decimal:
    """Parse a JSON number or numeric string exactly; bools, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where} must be a number or a decimal string, got {value!r}", {"field": where})
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        raise ConfigError(f"{where} must be a number or a decimal string, got {value!r}", {"field": where}) from None
    if not number.is_finite():
        raise ConfigError(f"{where} must be a finite number, got {value!r}", {"field": where})
    return number


def _non_negative(value: object, where: str) -> Decimal:
    number = _number(value, where)
    if number < 0:
        raise ConfigError(f"{where} must not be negative, got {value!r}", {"field": where})
    return number


def _positive(value: object, where: str) -> Decimal:
    number = _number(value, where)
    if number <= 0:
        raise ConfigError(f"{where} must be greater than zero, got {value!r}", {"field": where})
    return number


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be an object, got {type(value).__name__}", {"field": where})
    return value


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}", {"field": where, "unknown": unknown}
        )


def _require(raw: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    missing = sorted(keys - set(raw))
    if missing:
        raise ConfigError(f"{where} is missing keys {missing}", {"field": where, "missing": missing})


@dataclass(frozen=True)
class ModelLimits:
    """The fully resolved limits of one model (the default, merged with the model's overrides)."""

    max_order_notional: Decimal
    """Largest notional (USD) of one order."""
    max_position_qty: Mapping[str, Decimal]
    """Largest ``|position + open orders|`` per symbol; key ``"*"`` is the limit for symbols not listed."""
    order_rate_per_second: float
    """Token bucket refill rate, orders per second."""
    order_burst: int
    """Token bucket capacity: orders allowed back to back."""
    max_daily_loss: Decimal
    """Daily loss (USD, positive) at which the model moves to ``breach_state``."""
    max_drawdown: float
    """Drawdown as a fraction of peak equity, in (0, 1], at which the model moves to ``breach_state``."""
    breach_state: TradingState
    """REDUCING or HALTED: where a daily-loss or drawdown breach moves the model."""

    def position_limit(self, symbol: str) -> Decimal:
        """Return the max ``|position + open|`` for ``symbol`` (its own entry, else ``"*"``)."""
        limit = self.max_position_qty.get(symbol)
        return limit if limit is not None else self.max_position_qty[_ANY_INSTRUMENT]

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any], where: str) -> ModelLimits:
        positions = _object(raw["max_position_qty"], f"{where}.max_position_qty")
        if _ANY_INSTRUMENT not in positions:
            raise ConfigError(
                f'{where}.max_position_qty must have a "*" entry (the limit for symbols not listed)',
                {"field": f"{where}.max_position_qty"},
            )
        parsed_positions: dict[str, Decimal] = {}
        for symbol, qty in positions.items():
            if not isinstance(symbol, str) or not symbol:
                raise ConfigError(f"{where}.max_position_qty keys must be non-empty symbols, got {symbol!r}")
            parsed_positions[symbol] = _non_negative(qty, f"{where}.max_position_qty.{symbol}")
        burst = _positive(raw["order_burst"], f"{where}.order_burst")
        if burst != burst.to_integral_value():
            raise ConfigError(f"{where}.order_burst must be a whole number, got {raw['order_burst']!r}")
        drawdown = _positive(raw["max_drawdown"], f"{where}.max_drawdown")
        if drawdown > 1:
            raise ConfigError(
                f"{where}.max_drawdown is a fraction of peak equity and must be in (0, 1], got {raw['max_drawdown']!r}",
                {"field": f"{where}.max_drawdown"},
            )
        return cls(
            max_order_notional=_non_negative(raw["max_order_notional"], f"{where}.max_order_notional"),
            max_position_qty=MappingProxyType(parsed_positions),
            order_rate_per_second=float(_positive(raw["order_rate_per_second"], f"{where}.order_rate_per_second")),
            order_burst=int(burst),
            max_daily_loss=_positive(raw["max_daily_loss"], f"{where}.max_daily_loss"),
            max_drawdown=float(drawdown),
            breach_state=parse_state(raw["breach_state"], f"{where}.breach_state", allowed=_BREACH_STATES),
        )


@dataclass(frozen=True)
class RiskLimits:
    """Validated risk limits, loaded from JSON (see the module docstring of :mod:`ops_server.risk.rails`).

    Shape::

        {"global": {"max_gross_exposure": "5000000", "stale_mark_seconds": 10,
                    "allowed_instruments": ["BTC-USD", "ETH-USD"]},
         "default_model": {"max_order_notional": "250000", "max_position_qty": {"*": "100", "BTC-USD": "10"},
                           "order_rate_per_second": 50, "order_burst": 100, "max_daily_loss": "20000",
                           "max_drawdown": 0.2, "breach_state": "HALTED"},
         "models": {"momentum_v1": {"max_order_notional": "100000"}}}

    ``global`` and ``default_model`` are required with every key, except ``allowed_instruments``: when missing, every
    instrument is allowed; an explicit list (even empty) restricts to its members. ``models`` overrides any subset of
    the default keys per model; a ``max_position_qty`` override is merged entry by entry over the default map.
    Money and quantities may be JSON numbers or decimal strings (strings keep them exact).
    """

    max_gross_exposure: Decimal
    """Cap (USD) on gross exposure across all models after an order."""
    stale_mark_seconds: float
    """Largest mark age accepted."""
    allowed_instruments: frozenset[str] | None
    """Symbols that may be traded; ``None`` allows all."""
    default_model: ModelLimits
    """Limits of every model without overrides."""
    models: Mapping[str, ModelLimits] = field(default_factory=lambda: MappingProxyType({}))
    """Resolved limits of the models that have overrides."""

    def for_model(self, model_id: str) -> ModelLimits:
        """Return the limits that apply to ``model_id``."""
        return self.models.get(model_id, self.default_model)

    def instrument_allowed(self, symbol: str) -> bool:
        """Return True when ``symbol`` may be traded."""
        return self.allowed_instruments is None or symbol in self.allowed_instruments

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RiskLimits:
        """Validate and build limits from a parsed JSON object.

        Raises:
            ConfigError: A key is missing or unknown, a value is non-numeric, negative or out of range, or a state
                is not REDUCING/HALTED. The message names the offending field.
        """
        try:
            return cls._parse(data)
        except ConfigError as exc:
            raise ConfigError(f"risk limits: {exc.message}", exc.details) from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RiskLimits:
        """Read and validate a risk-limits JSON file.

        Raises:
            ConfigError: The file is missing, is not valid JSON, or fails :meth:`from_dict`.
        """
        data = load_json_file(path)
        try:
            return cls._parse(data)
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc.message}", exc.details) from exc

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> RiskLimits:
        data = _object(data, "the top level")
        _check_keys(data, _TOP_KEYS, "the top level")
        _require(data, frozenset({"global", "default_model"}), "the top level")

        glob = _object(data["global"], "global")
        _check_keys(glob, _GLOBAL_KEYS, "global")
        _require(glob, frozenset({"max_gross_exposure", "stale_mark_seconds"}), "global")
        allowed: frozenset[str] | None = None
        if "allowed_instruments" in glob:
            raw_allowed = glob["allowed_instruments"]
            if not isinstance(raw_allowed, list) or not all(isinstance(s, str) and s for s in raw_allowed):
                raise ConfigError(
                    f"global.allowed_instruments must be a list of symbols, got {raw_allowed!r}",
                    {"field": "global.allowed_instruments"},
                )
            allowed = frozenset(raw_allowed)

        default_raw = _object(data["default_model"], "default_model")
        _check_keys(default_raw, _MODEL_KEYS, "default_model")
        _require(default_raw, _MODEL_KEYS, "default_model")
        default = ModelLimits._from_raw(default_raw, "default_model")

        overrides = _object(data.get("models", {}), "models")
        models: dict[str, ModelLimits] = {}
        for model_id, override in overrides.items():
            where = f"models.{model_id}"
            if not isinstance(model_id, str) or not model_id:
                raise ConfigError(f"models keys must be non-empty model ids, got {model_id!r}")
            override = _object(override, where)
            _check_keys(override, _MODEL_KEYS, where)
            merged = {**default_raw, **override}
            if "max_position_qty" in override:
                merged["max_position_qty"] = {
                    **default_raw["max_position_qty"],
                    **_object(override["max_position_qty"], f"{where}.max_position_qty"),
                }
            models[model_id] = ModelLimits._from_raw(merged, where)

        return cls(
            max_gross_exposure=_non_negative(glob["max_gross_exposure"], "global.max_gross_exposure"),
            stale_mark_seconds=float(_positive(glob["stale_mark_seconds"], "global.stale_mark_seconds")),
            allowed_instruments=allowed,
            default_model=default,
            models=MappingProxyType(models),
        )
