"""The order state machine."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from engine_server.order_lifecycle import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    IllegalTransitionError,
    Order,
    OrderStatus,
)
from engine_server.venues.base import ExecType, OrderRequest, OrderType, Side, TimeInForce, VenueEvent

D = Decimal
REQ = OrderRequest("c1", "s1", "acct", "m1", "BTC-USD", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, D("3"), D("100"))


def ev(
    exec_type: ExecType, *, last: str = "0", price: str = "0", cum: str = "0", fee: str = "0", ts: int = 1
) -> VenueEvent:
    return VenueEvent(
        exec_type,
        "c1",
        "v1",
        "BTC-USD",
        Side.BUY,
        D(last),
        D(price),
        D(cum),
        D(3) - D(cum),
        D(0),
        D(fee),
        "",
        "",
        "",
        ts,
    )


def new_order() -> Order:
    return Order("c1", "sim", REQ, created_ns=0, updated_ns=0)


def test_apply_when_accepted_then_partial_then_fill_tracks_quantities_price_and_fees() -> None:
    order = new_order()
    assert order.apply(ev(ExecType.ACCEPTED)) is OrderStatus.ACCEPTED
    partial = order.apply(ev(ExecType.PARTIAL_FILL, last="1", price="100", cum="1", fee="0.1", ts=5))
    assert partial is OrderStatus.PARTIALLY_FILLED and order.leaves_qty == D(2)
    assert order.apply(ev(ExecType.FILL, last="2", price="101", cum="3", fee="0.2", ts=9)) is OrderStatus.FILLED
    assert order.status is OrderStatus.FILLED and order.is_terminal
    assert (order.filled_qty, order.avg_price, order.fees) == (D(3), D("100.66666667"), D("0.3"))
    assert order.updated_ns == 9 and order.leaves_qty == 0 and order.venue_order_id == "v1"


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], ev(ExecType.FILL, last="3", price="100", cum="3")),  # fill before accepted
        ([], ev(ExecType.CANCELED)),  # cancel of an order never accepted
        ([ev(ExecType.ACCEPTED)], ev(ExecType.ACCEPTED)),  # accepted twice
        ([ev(ExecType.ACCEPTED)], ev(ExecType.REJECTED)),  # rejected after acceptance
        ([ev(ExecType.REJECTED)], ev(ExecType.ACCEPTED)),  # revived after a reject
        ([ev(ExecType.ACCEPTED), ev(ExecType.CANCELED)], ev(ExecType.PARTIAL_FILL, last="1", price="1", cum="1")),
        ([ev(ExecType.ACCEPTED), ev(ExecType.FILL, last="3", price="1", cum="3")], ev(ExecType.CANCELED, cum="3")),
    ],
)
def test_apply_when_transition_illegal_then_raises_and_state_unchanged(
    path: list[VenueEvent], illegal: VenueEvent
) -> None:
    order = new_order()
    for event in path:
        order.apply(event)
    before = (order.status, order.filled_qty)
    with pytest.raises(IllegalTransitionError) as exc_info:
        order.apply(illegal)
    assert exc_info.value.code == "ILLEGAL_TRANSITION"
    assert (order.status, order.filled_qty) == before


def test_apply_when_fill_exceeds_quantity_then_overfill_raises() -> None:
    order = new_order()
    order.apply(ev(ExecType.ACCEPTED))
    order.apply(ev(ExecType.PARTIAL_FILL, last="2", price="100", cum="2"))
    with pytest.raises(IllegalTransitionError, match="overfill"):
        order.apply(ev(ExecType.FILL, last="2", price="100", cum="4"))
    assert order.filled_qty == D(2)


@pytest.mark.parametrize(
    "bad",
    [
        ev(ExecType.PARTIAL_FILL, last="1", price="100", cum="2"),  # cum disagrees
        ev(ExecType.FILL, last="1", price="100", cum="1"),  # FILL that does not complete
        ev(ExecType.PARTIAL_FILL, last="3", price="100", cum="3"),  # PARTIAL that completes
        ev(ExecType.PARTIAL_FILL, last="0", price="100", cum="0"),  # empty fill
    ],
)
def test_apply_when_fill_inconsistent_then_raises(bad: VenueEvent) -> None:
    order = new_order()
    order.apply(ev(ExecType.ACCEPTED))
    with pytest.raises(IllegalTransitionError):
        order.apply(bad)


def test_apply_when_event_for_other_order_then_raises() -> None:
    order = new_order()
    with pytest.raises(IllegalTransitionError):
        order.apply(replace(ev(ExecType.ACCEPTED), client_order_id="other"))


def test_transition_table_when_terminal_then_no_exit() -> None:
    assert {s for s, targets in ALLOWED_TRANSITIONS.items() if not targets} == TERMINAL_STATUSES
    assert OrderStatus.PARTIALLY_FILLED in ALLOWED_TRANSITIONS[OrderStatus.PARTIALLY_FILLED]
    assert OrderStatus.FILLED not in ALLOWED_TRANSITIONS[OrderStatus.NEW]


def test_cancel_when_partially_filled_then_canceled_keeps_fills_and_reason() -> None:
    order = new_order()
    order.apply(ev(ExecType.ACCEPTED))
    order.apply(ev(ExecType.PARTIAL_FILL, last="1", price="100", cum="1"))
    order.apply(replace(ev(ExecType.CANCELED, cum="1"), reason_code="ENGINE_RESTART"))
    assert (order.status, order.filled_qty, order.reason_code) == (OrderStatus.CANCELED, D(1), "ENGINE_RESTART")
