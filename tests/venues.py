"""Venue test values: the one-instrument market of the venue and ledger tests, and order requests on it."""

from __future__ import annotations

from decimal import Decimal

from engine_server.venues.base import Instrument, OrderRequest, OrderType, Side, TimeInForce

D = Decimal


def instrument(volatility: float = 0.5, *, lot: str = "0.1") -> Instrument:
    """``TST-USD``: tick 0.01, lots (and the minimum) of ``lot``, maker 1 bps, taker 5 bps, starting at 100."""
    return Instrument(
        symbol="TST-USD",
        tick_size=D("0.01"),
        lot_size=D(lot),
        min_qty=D(lot),
        maker_fee_bps=D("1"),
        taker_fee_bps=D("5"),
        initial_price=D("100.00"),
        volatility=volatility,
    )


def order_request(
    coid: str,
    side: Side = Side.BUY,
    qty: str = "1",
    price: str | None = "99.00",
    *,
    session: str = "s1",
    model: str = "m1",
    account: str = "acct",
    symbol: str = "TST-USD",
    tif: TimeInForce = TimeInForce.GTC,
    traced: bool = False,
) -> OrderRequest:
    """A LIMIT order at ``price``, or a MARKET order when ``price`` is None."""
    return OrderRequest(
        coid,
        session,
        account,
        model,
        symbol,
        side,
        OrderType.LIMIT if price is not None else OrderType.MARKET,
        tif,
        D(qty),
        None if price is None else D(price),
        {"traceparent": f"00-{coid}"} if traced else {},
    )
