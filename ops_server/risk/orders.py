"""What the rails judge: an order intent, the model's exposure context, and which rails protect capital.

:class:`OrderIntent` (one order or cancel as the rails see it), :class:`RiskContext` (the model's position, open
orders, quota and mark age at that moment), :func:`closing_quantity` and :func:`reduces_exposure` (how an order
relates to the exposure it meets) and :data:`CAPITAL_RAILS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from nautilus_mesh.errors import ValidationError

__all__ = ["CAPITAL_RAILS", "OrderIntent", "RiskContext", "Side", "closing_quantity", "reduces_exposure"]


CAPITAL_RAILS = frozenset({"quota", "max_order_notional", "max_position", "gross_exposure"})
"""The rails that protect capital: a denial by one of them is a breach the canary's guard counts. Rate limits,
stale marks, the instrument list and trading states are not (they say nothing about the model's sizing)."""


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
    """The model's quota less the quota it uses (USD): negative while it holds more than its quota (after an
    allocation cut or a mark move), so that closing part of an overdraft does not free quota it never had."""
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
