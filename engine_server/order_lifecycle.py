"""The order state machine: which venue events may move an order from which status.

::

    NEW ──► ACCEPTED ──► PARTIALLY_FILLED ──► FILLED
     │         │   │            │  ▲ │
     │         │   │            └──┘ └──────► CANCELED / EXPIRED
     │         │   └──────────────────────────► FILLED
     │         └──────────────────────────────► CANCELED / EXPIRED
     └──► REJECTED

FILLED, CANCELED, REJECTED and EXPIRED are terminal. A venue event that would make an illegal
move, fill beyond the ordered quantity or disagree with the order's cumulative quantity raises
:class:`IllegalTransitionError`, so a misbehaving venue is caught at the ledger instead of
corrupting positions downstream. (CANCELED after restart, reason ``ENGINE_RESTART``, is an
ordinary CANCELED from ACCEPTED or PARTIALLY_FILLED.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from engine_server.venues.base import ZERO, ExecType, OrderRequest, VenueEvent
from nautilus_mesh.decimals import EXACT
from nautilus_mesh.errors import MeshError, VenueRejectedError

PRICE_QUANTUM = Decimal("0.00000001")


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    NEW = "NEW"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)

# The status an execution type moves an order to.
STATUS_AFTER: Mapping[ExecType, OrderStatus] = {
    ExecType.ACCEPTED: OrderStatus.ACCEPTED,
    ExecType.PARTIAL_FILL: OrderStatus.PARTIALLY_FILLED,
    ExecType.FILL: OrderStatus.FILLED,
    ExecType.CANCELED: OrderStatus.CANCELED,
    ExecType.REJECTED: OrderStatus.REJECTED,
    ExecType.EXPIRED: OrderStatus.EXPIRED,
}

ALLOWED_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.ACCEPTED, OrderStatus.REJECTED}),
    OrderStatus.ACCEPTED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class IllegalTransitionError(MeshError):
    """A venue event would move an order illegally (wrong status, overfill, inconsistent quantities)."""

    def __init__(self, message: str, details: Mapping[str, object] | None = None) -> None:
        super().__init__("ILLEGAL_TRANSITION", message, details)


def cancel_reject(order: Order) -> VenueRejectedError:
    """The answer to a cancel of a finished order: ``TOO_LATE_TO_CANCEL`` once it is filled, ``ORDER_ALREADY_DONE``
    once cancelled, rejected or expired (``details`` carry its status and filled quantity)."""
    status = order.status.value
    return VenueRejectedError(
        "TOO_LATE_TO_CANCEL" if order.status is OrderStatus.FILLED else "ORDER_ALREADY_DONE",
        f"order {order.client_order_id!r} is already {status}: nothing left to cancel",
        {"client_order_id": order.client_order_id, "status": status, "filled_qty": order.filled_qty},
        rail="cancel",
    )


@dataclass(slots=True)
class Order:
    """An order as the engine's ledger knows it; mutated only through :meth:`apply`.

    Args:
        client_order_id: The engine-wide unique id.
        venue: Venue name the order was sent to.
        request: The original request.
        status: Current status.
        filled_qty: Cumulative filled quantity.
        avg_price: Volume-weighted average fill price (0 before the first fill).
        fees: Cumulative fees.
        created_ns: When the engine received it.
        updated_ns: Time of the last applied event.
    """

    client_order_id: str
    venue: str
    request: OrderRequest
    status: OrderStatus = OrderStatus.NEW
    filled_qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    fees: Decimal = ZERO
    created_ns: int = 0
    updated_ns: int = 0
    venue_order_id: str = ""
    notional: Decimal = ZERO
    """Sum of fill quantity times price; ``avg_price`` is derived from it."""
    reason_code: str = ""
    """Reason of the last reject or cancel."""
    reason_text: str = ""

    @property
    def quantity(self) -> Decimal:
        """Ordered quantity."""
        return self.request.quantity

    @property
    def leaves_qty(self) -> Decimal:
        """Quantity still working at the venue (0 once terminal)."""
        return ZERO if self.is_terminal else self.request.quantity - self.filled_qty

    def matches(self, session_id: str | None, model_id: str | None, venue: str | None) -> bool:
        """True when the order belongs to each filter given (None matches anything)."""
        req = self.request
        return (
            (session_id is None or req.session_id == session_id)
            and (model_id is None or req.model_id == model_id)
            and (venue is None or self.venue == venue)
        )

    @property
    def is_terminal(self) -> bool:
        """True once FILLED, CANCELED, REJECTED or EXPIRED."""
        return self.status in TERMINAL_STATUSES

    def apply(self, event: VenueEvent) -> OrderStatus:
        """Apply one venue event and return the new status.

        Raises:
            IllegalTransitionError: the move is not in the table, the event is for another order, a
                fill exceeds the ordered quantity, or the event's cumulative quantity disagrees.
        """
        target = STATUS_AFTER[event.exec_type]
        if event.client_order_id != self.client_order_id:
            raise IllegalTransitionError(
                "event is for another order", {**self._details(target), "event": event.client_order_id}
            )
        if target not in ALLOWED_TRANSITIONS[self.status]:
            raise IllegalTransitionError(f"illegal transition {self.status} -> {target}", self._details(target))
        if event.exec_type is ExecType.PARTIAL_FILL or event.exec_type is ExecType.FILL:
            self._apply_fill(event, target)
        elif event.cum_qty != self.filled_qty:
            raise IllegalTransitionError(
                "event cum_qty disagrees with the order",
                {**self._details(target), "cum_qty": event.cum_qty, "filled": self.filled_qty},
            )
        if event.venue_order_id:
            self.venue_order_id = event.venue_order_id
        if event.reason_code:
            self.reason_code = event.reason_code
            self.reason_text = event.reason_text
        self.status = target
        if event.ts_ns > self.updated_ns:
            self.updated_ns = event.ts_ns
        return target

    def _details(self, target: OrderStatus) -> dict[str, object]:
        return {"client_order_id": self.client_order_id, "from": self.status, "to": target}

    def _apply_fill(self, event: VenueEvent, target: OrderStatus) -> None:
        qty = event.last_qty
        if qty <= 0 or event.last_price <= 0:
            raise IllegalTransitionError(
                "a fill needs a positive quantity and price", {**self._details(target), "last_qty": qty}
            )
        filled = self.filled_qty + qty
        if filled > self.request.quantity:
            raise IllegalTransitionError(
                "overfill: fills exceed the ordered quantity",
                {**self._details(target), "ordered": self.request.quantity, "filled": filled},
            )
        if event.cum_qty != filled:
            raise IllegalTransitionError(
                "fill cum_qty disagrees with the order",
                {**self._details(target), "cum_qty": event.cum_qty, "expected": filled},
            )
        complete = filled == self.request.quantity
        if complete != (target is OrderStatus.FILLED):
            raise IllegalTransitionError(
                "FILL must complete the order and PARTIAL_FILL must not",
                {**self._details(target), "ordered": self.request.quantity, "filled": filled},
            )
        self.filled_qty = filled
        self.notional = EXACT.add(self.notional, EXACT.multiply(qty, event.last_price))
        self.avg_price = EXACT.quantize(EXACT.divide(self.notional, filled), PRICE_QUANTUM)
        self.fees += event.fee
