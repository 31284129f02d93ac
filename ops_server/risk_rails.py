"""Ops-side pre-trade risk rails (DESIGN.md section 6, strategy layer).

:class:`RiskRails` checks each sized order (:class:`OrderIntent`) against the limits of :class:`RiskLimits` and the
numbers the measurement supplies (:class:`RiskContext`), and raises :class:`RiskRejectedError` for the first rail that
fails, in this order:

==========================  ==========================  ======================================================
rail                        code                        passes when
==========================  ==========================  ======================================================
``trading_state``           ``TRADING_HALTED``          the global state, then the model state, is not HALTED
``trading_state``           ``REDUCE_ONLY``             ... and, when REDUCING, the order reduces exposure
``instrument``              ``INSTRUMENT_NOT_ALLOWED``  the symbol is on the allow-list (no list: all allowed)
``stale_mark``              ``STALE_MARK``              a mark exists and is at most ``stale_mark_seconds`` old
``quota``                   ``INVALID_QUOTE``           opening notional <= the model's available quota
``max_order_notional``      ``MAX_ORDER_NOTIONAL``      order notional <= the model's ``max_order_notional``
``max_position``            ``MAX_POSITION``            ``|position + open + order|`` <= the symbol's limit
``gross_exposure``          ``GROSS_EXPOSURE``          gross exposure - closing + opening <= the limit
``order_rate``              ``RATE_LIMITED``            the model's token bucket has a token (taken on pass)
==========================  ==========================  ======================================================

Rules:

* Order notional is ``quantity * price`` (the mark). Cancels pass every rail and take no rate token.
* An order *reduces exposure* when the model has a net exposure ``position + open`` that is not zero, the order is on
  the opposite side, and its quantity is at most ``|position + open|`` (it shrinks the exposure without crossing
  zero; a flip is not reducing). Such an order skips the quota, max-position and gross-exposure rails; every other
  rail still applies (a fat-fingered or stale-priced close is still refused, and HALTED still denies it).
* An order that flips the position through zero is split: its *closing* part (up to ``|position + open|``) releases
  that exposure, and only its *opening* part needs quota and counts toward gross exposure. For an order that opens
  from flat, opening notional is the order notional (``requested`` in the ``INVALID_QUOTE`` details).
* The rate token is taken only when every other rail passed, so denied orders do not drain the bucket. Excess orders
  are denied, never queued.
* ``max_drawdown`` is a fraction of peak equity in (0, 1]; ``max_daily_loss`` is a positive USD amount. Reaching either
  (``-daily_pnl >= max_daily_loss`` or ``drawdown >= max_drawdown``) moves the model to its ``breach_state`` unless it
  is already at least that strict; a breach never loosens a state.

The rails are meant to be driven from one event-loop thread and are not thread-safe.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from nautilus_mesh.errors import ConfigError, RiskRejectedError, ValidationError
from nautilus_mesh.files import load_json_file
from ops_server.trading_state import RiskEvent, TradingState, TradingStates, parse_state

__all__ = [
    "ModelLimits",
    "OrderIntent",
    "RiskContext",
    "RiskEvent",
    "RiskLimits",
    "RiskRails",
    "Side",
    "TradingState",
    "plain_decimal",
]

log = logging.getLogger(__name__)

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


def plain_decimal(value: Decimal) -> str:
    """Format a Decimal as a plain number without exponent or trailing zeros (``1000.00`` -> ``1000``)."""
    if value == 0:
        return "0"  # also folds -0 into 0
    return format(value.normalize(), "f")


def _plain_float(value: float) -> str:
    return plain_decimal(Decimal(repr(value)))


# --------------------------------------------------------------------------------------------------------- limits


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
    """Validated risk limits, loaded from JSON (see the module docstring of :mod:`ops_server.risk_rails`).

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


# ---------------------------------------------------------------------------------------------- orders and context


class Side(StrEnum):
    """Order side."""

    BUY = "BUY"
    SELL = "SELL"


def _finite(value: Decimal, name: str) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError("INVALID_ARGUMENT", f"{name} must be a finite Decimal, got {value!r}", field=name)


@dataclass(frozen=True)
class OrderIntent:
    """A sized order about to be sent, as the risk rails see it."""

    model_id: str
    """The model that wants the order."""
    symbol: str
    """Instrument, e.g. ``BTC-USD``."""
    side: Side
    """BUY or SELL (a plain ``"BUY"``/``"SELL"`` string is converted)."""
    quantity: Decimal
    """Unsigned order quantity, greater than zero (cancels may carry zero)."""
    price: Decimal
    """The mark used for notional, greater than zero (cancels may carry zero)."""
    is_cancel: bool = False
    """A cancel passes every rail."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "side", Side(self.side))
        except ValueError:
            raise ValidationError(
                "INVALID_ARGUMENT", f"side must be BUY or SELL, got {self.side!r}", field="side"
            ) from None
        _finite(self.quantity, "quantity")
        _finite(self.price, "price")
        if not self.is_cancel:
            if self.quantity <= 0:
                raise ValidationError(
                    "INVALID_ARGUMENT", f"quantity must be > 0, got {self.quantity}", field="quantity"
                )
            if self.price <= 0:
                raise ValidationError("INVALID_ARGUMENT", f"price must be > 0, got {self.price}", field="price")

    @property
    def signed_quantity(self) -> Decimal:
        """Quantity with sign: positive for BUY, negative for SELL."""
        return self.quantity if self.side is Side.BUY else -self.quantity

    @property
    def notional(self) -> Decimal:
        """``quantity * price`` in USD."""
        return self.quantity * self.price


@dataclass(frozen=True)
class RiskContext:
    """The measured numbers an order is checked against, supplied by the caller at check time."""

    position_qty: Decimal
    """The model's current position in the symbol, signed (long positive)."""
    open_order_qty: Decimal
    """The model's resting order quantity in the symbol, signed (buys positive)."""
    available_quota: Decimal
    """The model's quota (USD) still available for new exposure."""
    gross_exposure: Decimal
    """Gross exposure (USD) across all models before this order."""
    mark_age_seconds: float | None
    """Age of the mark used for the price; ``None`` when there is no mark."""

    def __post_init__(self) -> None:
        for name in ("position_qty", "open_order_qty", "available_quota", "gross_exposure"):
            _finite(getattr(self, name), name)
        if self.mark_age_seconds is not None and not math.isfinite(self.mark_age_seconds):
            raise ValidationError(
                "INVALID_ARGUMENT", "mark_age_seconds must be finite or None", field="mark_age_seconds"
            )

    @property
    def net_exposure_qty(self) -> Decimal:
        """``position + open orders``: what the model holds if every resting order fills."""
        return self.position_qty + self.open_order_qty


def closing_quantity(intent: OrderIntent, ctx: RiskContext) -> Decimal:
    """The part of the order that offsets existing exposure (``position + open``); the rest opens new exposure."""
    net = ctx.net_exposure_qty
    if net == 0 or (net > 0) == (intent.side is Side.BUY):
        return Decimal(0)
    return min(intent.quantity, abs(net))


def reduces_exposure(intent: OrderIntent, ctx: RiskContext) -> bool:
    """Return True when the order shrinks ``|position + open|`` without crossing zero (see the module docstring)."""
    net = ctx.net_exposure_qty
    if net == 0:
        return False
    opposite = (net > 0) != (intent.side is Side.BUY)
    return opposite and intent.quantity <= abs(net)


# ----------------------------------------------------------------------------------------------------------- rails


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RiskRails:
    """Pre-trade risk rails, trading states, PnL breaches and the kill switch for the ops service.

    Args:
        limits: The limits in force; replace them with :meth:`reload`.
        clock: Monotonic seconds, for the order-rate token buckets (inject a fake in tests).
        on_event: Called with every :class:`RiskEvent` (rejections, state changes, breaches, kill switch, reloads)
            so the service can audit it and count ``risk_rejections_total{rail,model}``. An exception it raises is
            logged and swallowed, so auditing cannot change a risk decision.
        wall_clock: Epoch seconds for :attr:`RiskEvent.at`.
    """

    def __init__(
        self,
        limits: RiskLimits,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[RiskEvent], None] | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._on_event = on_event
        self._states = TradingStates(wall_clock)
        self._buckets: dict[str, _Bucket] = {}
        self._rejections: dict[tuple[str, str], int] = {}

    # -- read-only views

    @property
    def limits(self) -> RiskLimits:
        """The limits in force."""
        return self._limits

    @property
    def rejections(self) -> dict[tuple[str, str], int]:
        """A copy of the denial counts keyed by ``(rail, model_id)``."""
        return dict(self._rejections)

    @property
    def global_state(self) -> TradingState:
        """The global trading state."""
        return self._states.global_state

    @property
    def kill_switch_engaged(self) -> bool:
        """True between :meth:`engage_kill_switch` and :meth:`release_kill_switch`."""
        return self._states.kill_switch_engaged

    def state(self, model_id: str) -> TradingState:
        """Return the model's effective state: the stricter of the global state and its own."""
        return self._states.effective(model_id)

    def model_state(self, model_id: str) -> TradingState:
        """Return the model's own state, ignoring the global state."""
        return self._states.model_state(model_id)

    # -- the check

    def check(self, intent: OrderIntent, ctx: RiskContext) -> None:
        """Check one order against every rail; return when it may be sent.

        Raises:
            RiskRejectedError: The first failing rail, with its stable ``code``, ``rail`` and string ``details``.
        """
        if intent.is_cancel:
            return
        try:
            self._check(intent, ctx)
        except RiskRejectedError as exc:
            self._record_rejection(intent, exc)
            raise

    def _check(self, intent: OrderIntent, ctx: RiskContext) -> None:
        reducing = reduces_exposure(intent, ctx)
        self._check_state("global", self._states.global_state, reducing, intent, ctx)
        self._check_state("model", self._states.model_state(intent.model_id), reducing, intent, ctx)

        limits = self._limits
        model = limits.for_model(intent.model_id)
        if not limits.instrument_allowed(intent.symbol):
            raise RiskRejectedError(
                "INSTRUMENT_NOT_ALLOWED",
                f"{intent.symbol} is not on the instrument allow-list",
                {"symbol": intent.symbol},
                rail="instrument",
            )
        if ctx.mark_age_seconds is None or ctx.mark_age_seconds > limits.stale_mark_seconds:
            age = "none" if ctx.mark_age_seconds is None else _plain_float(ctx.mark_age_seconds)
            raise RiskRejectedError(
                "STALE_MARK",
                f"mark for {intent.symbol} is stale (age {age}s, max {_plain_float(limits.stale_mark_seconds)}s)",
                {"mark_age_seconds": age, "max_age_seconds": _plain_float(limits.stale_mark_seconds)},
                rail="stale_mark",
            )
        notional = intent.notional
        # A flip through zero first releases the exposure it closes: only the opening part needs quota.
        closing = closing_quantity(intent, ctx) * intent.price
        opening = notional - closing
        if not reducing and opening > ctx.available_quota + closing:
            requested, available = plain_decimal(opening), plain_decimal(ctx.available_quota + closing)
            raise RiskRejectedError(
                "INVALID_QUOTE",
                f"order notional {requested} exceeds the available quota {available}",
                {"requested": requested, "available": available},
                rail="quota",
            )
        if notional > model.max_order_notional:
            raise RiskRejectedError(
                "MAX_ORDER_NOTIONAL",
                f"order notional {plain_decimal(notional)} exceeds the limit {plain_decimal(model.max_order_notional)}",
                {"requested": plain_decimal(notional), "limit": plain_decimal(model.max_order_notional)},
                rail="max_order_notional",
            )
        if not reducing:
            projected = ctx.net_exposure_qty + intent.signed_quantity
            position_limit = model.position_limit(intent.symbol)
            if abs(projected) > position_limit:
                raise RiskRejectedError(
                    "MAX_POSITION",
                    f"{intent.symbol} position would reach {plain_decimal(projected)}, "
                    f"limit {plain_decimal(position_limit)}",
                    {
                        "symbol": intent.symbol,
                        "projected": plain_decimal(projected),
                        "limit": plain_decimal(position_limit),
                    },
                    rail="max_position",
                )
            gross_after = ctx.gross_exposure - closing + opening
            if gross_after > limits.max_gross_exposure:
                raise RiskRejectedError(
                    "GROSS_EXPOSURE",
                    f"gross exposure would reach {plain_decimal(gross_after)}, "
                    f"limit {plain_decimal(limits.max_gross_exposure)}",
                    {
                        "current": plain_decimal(ctx.gross_exposure),
                        "requested": plain_decimal(opening),
                        "limit": plain_decimal(limits.max_gross_exposure),
                    },
                    rail="gross_exposure",
                )
        self._take_token(intent.model_id, model)

    def _check_state(
        self, scope: str, state: TradingState, reducing: bool, intent: OrderIntent, ctx: RiskContext
    ) -> None:
        if state is TradingState.HALTED:
            raise RiskRejectedError(
                "TRADING_HALTED",
                f"trading is halted ({scope})",
                {"scope": scope, "state": str(state)},
                rail="trading_state",
            )
        if state is TradingState.REDUCING and not reducing:
            raise RiskRejectedError(
                "REDUCE_ONLY",
                f"trading is reduce-only ({scope}); the order does not reduce the {intent.symbol} exposure",
                {
                    "scope": scope,
                    "state": str(state),
                    "net_position": plain_decimal(ctx.net_exposure_qty),
                    "order_qty": plain_decimal(intent.signed_quantity),
                },
                rail="trading_state",
            )

    def _take_token(self, model_id: str, model: ModelLimits) -> None:
        now = self._clock()
        bucket = self._buckets.get(model_id)
        if bucket is None:
            bucket = self._buckets[model_id] = _Bucket(tokens=float(model.order_burst), updated=now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(model.order_burst), bucket.tokens + elapsed * model.order_rate_per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RiskRejectedError(
                "RATE_LIMITED",
                f"order rate above {_plain_float(model.order_rate_per_second)}/s (burst {model.order_burst})",
                {"rate_per_second": _plain_float(model.order_rate_per_second), "burst": str(model.order_burst)},
                rail="order_rate",
            )
        bucket.tokens -= 1.0

    def _record_rejection(self, intent: OrderIntent, exc: RiskRejectedError) -> None:
        key = (exc.rail, intent.model_id)
        self._rejections[key] = self._rejections.get(key, 0) + 1
        log.info(
            "[RISK] denied model=%s rail=%s code=%s symbol=%s side=%s qty=%s",
            intent.model_id,
            exc.rail,
            exc.code,
            intent.symbol,
            intent.side,
            plain_decimal(intent.quantity),
        )
        state = self._states.effective(intent.model_id)
        self._publish(
            self._states.event("REJECTED", intent.model_id, exc.rail, exc.code, exc.message, exc.details, state, state)
        )

    # -- trading states

    def set_state(self, model_id: str | None, state: TradingState, reason: str) -> RiskEvent:
        """Set a model's own state, or the global state when ``model_id`` is None; publish ``STATE_CHANGED``.

        The event is published even when the state does not change, so every operator action is audited.

        Raises:
            ValidationError: Empty ``model_id``, unknown state, or ``KILL_SWITCH_ENGAGED`` when loosening the global
                state while the kill switch is engaged (use :meth:`release_kill_switch`).
        """
        return self._publish(self._states.set_state(model_id, state, reason))

    def update_pnl(self, model_id: str, daily_pnl: Decimal, drawdown: float) -> RiskEvent | None:
        """Apply the daily-loss and drawdown limits to fresh PnL numbers.

        Args:
            model_id: The model measured.
            daily_pnl: Today's PnL in USD (a loss is negative).
            drawdown: Current decline from peak equity as a fraction of the peak (0.25 = 25% below the peak).

        Returns:
            The published ``LIMIT_BREACHED`` event when a breach moved the model to a stricter state, else None (no
            breach, or the model is already at least as strict as its ``breach_state``). ``rail`` is ``daily_loss``
            or ``drawdown`` (the first breached), ``details`` holds the breached values and limits and ``breached``.

        Raises:
            ValueError: ``daily_pnl`` or ``drawdown`` is not finite.
        """
        if not isinstance(daily_pnl, Decimal) or not daily_pnl.is_finite() or not math.isfinite(drawdown):
            raise ValueError(f"daily_pnl and drawdown must be finite, got {daily_pnl!r}, {drawdown!r}")
        model = self._limits.for_model(model_id)
        breached: list[tuple[str, str]] = []
        details: dict[str, str] = {}
        if -daily_pnl >= model.max_daily_loss:
            breached.append(("daily_loss", "MAX_DAILY_LOSS"))
            details.update(daily_pnl=plain_decimal(daily_pnl), max_daily_loss=plain_decimal(model.max_daily_loss))
        if drawdown >= model.max_drawdown:
            breached.append(("drawdown", "MAX_DRAWDOWN"))
            details.update(drawdown=_plain_float(drawdown), max_drawdown=_plain_float(model.max_drawdown))
        if not breached:
            return None
        rail, code = breached[0]
        details["breached"] = ",".join(r for r, _ in breached)
        message = f"{details['breached']} limit breached; model moved to {model.breach_state}"
        event = self._states.escalate(model_id, model.breach_state, rail, code, message, details)
        return None if event is None else self._publish(event)

    def engage_kill_switch(self, reason: str) -> RiskEvent:
        """Halt all trading globally (cancels still pass), record the kill switch, publish ``KILL_SWITCH_ENGAGED``."""
        return self._publish(self._states.engage_kill_switch(reason))

    def release_kill_switch(self, reason: str) -> RiskEvent:
        """Release the kill switch, restore global ACTIVE (model states are kept), publish ``KILL_SWITCH_RELEASED``.

        Raises:
            ValidationError: ``KILL_SWITCH_NOT_ENGAGED`` when the kill switch is not engaged.
        """
        return self._publish(self._states.release_kill_switch(reason))

    # -- limits and persistence

    def reload(self, path: str | os.PathLike[str]) -> RiskLimits:
        """Load and validate new limits; they replace the old ones only when valid.

        Trading states and token buckets are kept (a bucket is capped at the new burst on its next use).

        Raises:
            ConfigError: The file is missing or invalid; the previous limits stay in force.
        """
        try:
            limits = RiskLimits.load(path)
        except ConfigError as exc:
            log.error("[RISK] risk limits reload refused, previous limits stay in force: %s", exc.message)
            raise
        self._limits = limits
        log.info("[RISK] risk limits reloaded from %s (%d model overrides)", os.fspath(path), len(limits.models))
        state = self._states.global_state
        self._publish(
            self._states.event(
                "LIMITS_RELOADED", "", "", "", "risk limits reloaded", {"path": os.fspath(path)}, state, state
            )
        )
        return limits

    def snapshot(self) -> dict[str, Any]:
        """Return the trading states and kill switch flag as a JSON-able dict for persistence."""
        return self._states.snapshot()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Restore states saved by :meth:`snapshot` (no events are published).

        Raises:
            ConfigError: The snapshot is malformed; the current states are kept.
        """
        self._states.restore(snapshot)

    def _publish(self, event: RiskEvent) -> RiskEvent:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("[RISK] on_event callback failed for %s event (model=%s)", event.kind, event.model_id)
        return event
