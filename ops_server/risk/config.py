"""Risk limits: what the ops rails enforce, read from the limits file (``config/demo/risk_limits.json``).

The file has three parts: ``global`` (gross exposure cap, stale-mark age, instrument allow-list), ``default_model``
(every model's limits, all required) and ``models`` (per-model overrides of any subset, merged over the default; a
``max_position_qty`` override is merged entry by entry). Money and quantities are JSON numbers or decimal strings
(strings keep them exact); ``true`` is not a number. Every field is validated by the pydantic models below and an
error names the source (the file path) and the field path; unknown keys are errors.

Shape::

    {"global": {"max_gross_exposure": "5000000", "stale_mark_seconds": 10,
                "allowed_instruments": ["BTC-USD", "ETH-USD"]},
     "default_model": {"max_order_notional": "250000", "max_position_qty": {"*": "100", "BTC-USD": "10"},
                       "order_rate_per_second": 50, "order_burst": 100, "max_daily_loss": "20000",
                       "max_drawdown_ratio": 0.2, "breach_state": "HALTED"},
     "models": {"momentum_v1": {"max_order_notional": "100000"}}}
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Annotated, Any, Literal

import pydantic

from nautilus_mesh.config import validate_config
from nautilus_mesh.decimals import MAX_INTEGER_DIGITS
from nautilus_mesh.errors import ConfigError
from nautilus_mesh.files import load_json_file
from ops_server.risk.trading_state import TradingState

__all__ = ["ModelLimits", "RiskLimits"]

ANY_INSTRUMENT = "*"


def _exact(value: object) -> Decimal:
    """A JSON number or decimal string as an exact, finite Decimal (a float through its shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"must be a number or a decimal string, got {value!r}")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        raise ValueError(f"must be a number or a decimal string, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    if number and number.adjusted() >= MAX_INTEGER_DIGITS:  # the rails' arithmetic is exact below that
        raise ValueError(f"must be below 1e{MAX_INTEGER_DIGITS}, got {value!r}")
    return number


Exact = Annotated[Decimal, pydantic.BeforeValidator(_exact)]
NonNegative = Annotated[Exact, pydantic.Field(ge=0)]
Positive = Annotated[Exact, pydantic.Field(gt=0)]
Symbol = Annotated[str, pydantic.Field(min_length=1)]


class _LimitsModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class GlobalLimits(_LimitsModel):
    """The ``global`` part: limits across all models."""

    max_gross_exposure: NonNegative
    """Cap on gross exposure across all live models after an order, USD."""
    stale_mark_seconds: float = pydantic.Field(gt=0, allow_inf_nan=False)
    """Largest mark age accepted, seconds."""
    allowed_instruments: list[Symbol] | None = None
    """Symbols that may be traded; missing allows all, an explicit list (even empty) restricts to its members."""
    reduce_only_flip: Literal["clip", "deny"] = "clip"
    """In REDUCING, an order that would flip the position through zero: ``clip`` sends its reducing part, floored to the
    lot (the rest is refused with ``REDUCE_ONLY_OPENING_REFUSED`` in the decision; a reducing part under one lot or
    the minimum quantity sends nothing, ``NO_ACTION``), ``deny`` refuses it whole (``REDUCE_ONLY``)."""


class ModelLimits(_LimitsModel):
    """The fully resolved limits of one model (the default, merged with the model's overrides)."""

    max_order_notional: NonNegative
    """Largest notional of one order, USD."""
    max_position_qty: dict[Symbol, NonNegative]
    """Largest ``|position + open orders|`` per symbol, in units of the instrument; ``"*"`` for symbols not listed."""
    order_rate_per_second: float = pydantic.Field(gt=0, allow_inf_nan=False)
    """Token bucket refill rate, orders per second."""
    order_burst: int = pydantic.Field(gt=0)
    """Token bucket capacity: orders allowed back to back (count)."""
    max_daily_loss: Positive
    """Daily loss at which the model moves to ``breach_state``, USD (a positive amount)."""
    max_drawdown_ratio: float = pydantic.Field(gt=0, le=1)
    """Drawdown as a fraction of peak equity, in (0, 1], at which the model moves to ``breach_state``. Equity is
    capital base + PnL with allocation changes counted as deposits or withdrawals, so a cut alone never breaches."""
    breach_state: Literal[TradingState.REDUCING, TradingState.HALTED]
    """REDUCING or HALTED: where a daily-loss or drawdown breach moves the model."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, Mapping) and "max_drawdown" in data:
            raise ValueError("max_drawdown was renamed to max_drawdown_ratio (a fraction of peak equity)")
        return data

    @pydantic.field_validator("order_rate_per_second", "max_drawdown_ratio", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @pydantic.field_validator("breach_state", mode="before")
    @classmethod
    def _state(cls, value: object) -> object:
        for state in (TradingState.REDUCING, TradingState.HALTED):
            if value == state.value:
                return state
        raise ValueError(f"must be one of REDUCING, HALTED, got {value!r}")

    @pydantic.field_validator("max_position_qty")
    @classmethod
    def _has_default(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if ANY_INSTRUMENT not in value:
            raise ValueError('must have a "*" entry (the limit for symbols not listed)')
        return value

    def position_limit(self, symbol: str) -> Decimal:
        """The max ``|position + open|`` for ``symbol`` (its own entry, else ``"*"``), instrument units."""
        limit = self.max_position_qty.get(symbol)
        return limit if limit is not None else self.max_position_qty[ANY_INSTRUMENT]


class RiskLimitsFile(_LimitsModel):
    """The limits file as written: the default model's limits and per-model overrides (any subset of keys)."""

    global_: GlobalLimits = pydantic.Field(alias="global")
    """Limits across all models."""
    default_model: ModelLimits
    """Limits of every model without overrides."""
    models: dict[Symbol, dict[str, Any]] = {}
    """Per-model overrides of any subset of ``default_model``'s keys."""


@dataclass(frozen=True)
class RiskLimits:
    """Validated risk limits, with every model's overrides resolved (see the module docstring for the file)."""

    max_gross_exposure: Decimal
    """Cap on gross exposure across all models after an order, USD."""
    stale_mark_seconds: float
    """Largest mark age accepted, seconds."""
    allowed_instruments: frozenset[str] | None
    """Symbols that may be traded; ``None`` allows all."""
    default_model: ModelLimits
    """Limits of every model without overrides."""
    models: Mapping[str, ModelLimits] = field(default_factory=lambda: MappingProxyType({}))
    """Resolved limits of the models that have overrides."""
    reduce_only_flip: str = "clip"
    """``clip`` or ``deny``: what REDUCING does with an order that would flip the position (see the file's field)."""

    def for_model(self, model_id: str) -> ModelLimits:
        """The limits that apply to ``model_id``."""
        return self.models.get(model_id, self.default_model)

    def instrument_allowed(self, symbol: str) -> bool:
        """True when ``symbol`` may be traded."""
        return self.allowed_instruments is None or symbol in self.allowed_instruments

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "risk limits",
        known_models: Collection[str] | None = None,
        known_instruments: Collection[str] | None = None,
    ) -> RiskLimits:
        """Validate and resolve limits from a parsed JSON object.

        ``known_models`` and ``known_instruments`` (the registry's models and the instruments they trade), when given,
        are the only model ids ``models`` may override and the only symbols a ``max_position_qty`` may name (besides
        ``*``): a misspelled id would otherwise leave the model on the default limits, silently.

        Raises:
            ConfigError: A key is missing or unknown, a value is non-numeric, negative or out of range, or a state
                is not REDUCING/HALTED (the message starts with ``source`` and names the field path); a model or an
                instrument not known (``UNKNOWN_MODEL``, ``UNKNOWN_INSTRUMENT``).
        """
        parsed = validate_config(RiskLimitsFile, data, source=source)
        if known_models is not None:
            for model_id in parsed.models:
                if model_id not in known_models:
                    raise ConfigError(
                        f"{source}: models.{model_id}: unknown model {model_id!r}, its limits would never apply "
                        f"(known: {', '.join(sorted(known_models))})",
                        {"field": f"models.{model_id}", "model_id": model_id},
                        code="UNKNOWN_MODEL",
                    )
        if known_instruments is not None:
            named: list[tuple[str, object]] = [("default_model", parsed.default_model.max_position_qty)]
            named += [(f"models.{m}", o.get("max_position_qty")) for m, o in parsed.models.items()]
            for at, caps in named:
                for symbol in caps if isinstance(caps, Mapping) else ():
                    if symbol != "*" and symbol not in known_instruments:
                        raise ConfigError(
                            f"{source}: {at}.max_position_qty.{symbol}: unknown instrument {symbol!r}, no model trades "
                            f"it (known: {', '.join(sorted(known_instruments))}; * for any other)",
                            {"field": f"{at}.max_position_qty.{symbol}", "instrument": symbol},
                            code="UNKNOWN_INSTRUMENT",
                        )
        default_raw = parsed.default_model.model_dump()
        models: dict[str, ModelLimits] = {}
        for model_id, override in parsed.models.items():
            merged = {**default_raw, **override}
            if isinstance(override.get("max_position_qty"), Mapping):
                merged["max_position_qty"] = {**default_raw["max_position_qty"], **override["max_position_qty"]}
            models[model_id] = validate_config(ModelLimits, merged, source=source, at=f"models.{model_id}")
        glob = parsed.global_
        return cls(
            max_gross_exposure=glob.max_gross_exposure,
            stale_mark_seconds=glob.stale_mark_seconds,
            allowed_instruments=None if glob.allowed_instruments is None else frozenset(glob.allowed_instruments),
            default_model=parsed.default_model,
            models=MappingProxyType(models),
            reduce_only_flip=glob.reduce_only_flip,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        known_models: Collection[str] | None = None,
        known_instruments: Collection[str] | None = None,
    ) -> RiskLimits:
        """Read and validate a risk-limits JSON file (``known_models``, ``known_instruments``: as :meth:`from_dict`).

        Raises:
            ConfigError: The file is missing, is not valid JSON, or fails :meth:`from_dict` (named by its path).
        """
        data = load_json_file(path)
        try:
            return cls.from_dict(
                data, source=os.fspath(path), known_models=known_models, known_instruments=known_instruments
            )
        except ConfigError as exc:
            raise ConfigError(exc.message, exc.details, code=exc.code) from None
