"""The sim venue's matching engine: rules, properties over random order flow, determinism."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_server.order_lifecycle import OrderStatus
from engine_server.order_manager import OrderManager
from engine_server.venues.base import ExecType, Instrument, OrderRequest, OrderType, Side, TimeInForce, VenueEvent
from engine_server.venues.sim import BookOrder, LatencyConfig, OrderBook, SimVenue, SimVenueConfig, fee_for
from tests.venues import instrument

D = Decimal
ZERO = Decimal(0)
TEST_INSTRUMENT = Instrument(
    symbol="TST-USD",
    tick_size=D("0.5"),
    lot_size=D("1"),
    min_qty=D("1"),
    maker_fee_bps=D("1"),
    taker_fee_bps=D("5"),
    initial_price=D("100"),
    volatility=0.5,
)


def crossed(book: OrderBook) -> bool:
    """True when the best bid is at or above the best ask (never true after matching)."""
    bid, ask = book.best_bid(), book.best_ask()
    return bid is not None and ask is not None and bid >= ask


def order(
    coid: str,
    side: Side,
    qty: str,
    price: str | None = None,
    *,
    account: str = "acct-a",
    tif: TimeInForce = TimeInForce.GTC,
) -> BookOrder:
    order_type = OrderType.MARKET if price is None else OrderType.LIMIT
    return BookOrder(coid, f"v-{coid}", account, side, order_type, tif, D(qty), None if price is None else D(price))


def by_type(events: Iterable[VenueEvent], exec_type: ExecType) -> list[VenueEvent]:
    return [e for e in events if e.exec_type is exec_type]


@pytest.fixture
def book() -> OrderBook:
    return OrderBook(TEST_INSTRUMENT)


def test_limit_when_better_price_resting_then_it_fills_first(book: OrderBook) -> None:
    book.submit(order("ask-101", Side.SELL, "5", "101", account="m1"), 1)
    book.submit(order("ask-100", Side.SELL, "5", "100", account="m2"), 2)
    events = book.submit(order("buy", Side.BUY, "6", "101", account="t"), 3)
    maker_fills = [e for e in events if e.liquidity == "MAKER"]
    assert [(e.client_order_id, e.last_qty, e.last_price) for e in maker_fills] == [
        ("ask-100", D(5), D(100)),
        ("ask-101", D(1), D(101)),
    ]
    assert events[-1].exec_type is ExecType.FILL and events[-1].avg_price == D("100.16666667")


def test_limit_when_same_price_then_earlier_order_fills_first(book: OrderBook) -> None:
    book.submit(order("first", Side.BUY, "3", "99", account="m1"), 1)
    book.submit(order("second", Side.BUY, "3", "99", account="m2"), 2)
    events = book.submit(order("sell", Side.SELL, "4", "99", account="t"), 3)
    assert [(e.client_order_id, e.exec_type) for e in events if e.liquidity == "MAKER"] == [
        ("first", ExecType.FILL),
        ("second", ExecType.PARTIAL_FILL),
    ]
    resting = book.resting("second")
    assert resting is not None and resting.leaves_qty == D(2)


def test_fok_when_book_cannot_fill_entirely_then_nothing_fills(book: OrderBook) -> None:
    book.submit(order("ask", Side.SELL, "5", "100", account="m1"), 1)
    events = book.submit(order("fok", Side.BUY, "6", "100", account="t", tif=TimeInForce.FOK), 2)
    assert [e.exec_type for e in events] == [ExecType.ACCEPTED, ExecType.EXPIRED]
    assert events[-1].reason_code == "FOK_NOT_FILLABLE" and events[-1].cum_qty == 0
    resting = book.resting("ask")
    assert resting is not None and resting.leaves_qty == D(5)


def test_fok_when_liquidity_suffices_across_levels_then_fills_entirely(book: OrderBook) -> None:
    book.submit(order("a1", Side.SELL, "2", "100", account="m1"), 1)
    book.submit(order("a2", Side.SELL, "4", "100.5", account="m1"), 2)
    events = book.submit(order("fok", Side.BUY, "5", "100.5", account="t", tif=TimeInForce.FOK), 3)
    assert events[-1].exec_type is ExecType.FILL and events[-1].cum_qty == D(5)


def test_fok_when_only_own_orders_would_fill_then_nothing_fills_and_own_orders_stay(book: OrderBook) -> None:
    book.submit(order("own", Side.SELL, "5", "100", account="t"), 1)
    events = book.submit(order("fok", Side.BUY, "5", "100", account="t", tif=TimeInForce.FOK), 2)
    assert events[-1].exec_type is ExecType.EXPIRED
    assert "own" in book


def test_ioc_when_partially_fillable_then_remainder_cancelled_and_nothing_rests(book: OrderBook) -> None:
    book.submit(order("ask", Side.SELL, "2", "100", account="m1"), 1)
    events = book.submit(order("ioc", Side.BUY, "5", "100", account="t", tif=TimeInForce.IOC), 2)
    last = events[-1]
    assert last.exec_type is ExecType.CANCELED and last.reason_code == "IOC_REMAINDER" and last.cum_qty == D(2)
    assert "ioc" not in book and book.best_bid() is None


def test_market_when_book_exhausted_then_remainder_cancelled(book: OrderBook) -> None:
    book.submit(order("bid", Side.BUY, "3", "99", account="m1"), 1)
    events = book.submit(order("mkt", Side.SELL, "10", None, account="t"), 2)
    assert [e.exec_type for e in events if e.client_order_id == "mkt"] == [
        ExecType.ACCEPTED,
        ExecType.PARTIAL_FILL,
        ExecType.CANCELED,
    ]
    assert events[-1].reason_code == "MARKET_REMAINDER" and len(book) == 0


def test_self_match_when_same_account_resting_then_resting_cancelled_and_matching_continues(book: OrderBook) -> None:
    book.submit(order("own-ask", Side.SELL, "5", "100", account="fund"), 1)
    book.submit(order("other-ask", Side.SELL, "5", "100", account="other"), 2)
    events = book.submit(order("buy", Side.BUY, "5", "100", account="fund"), 3)
    cancel = by_type(events, ExecType.CANCELED)
    assert [(e.client_order_id, e.reason_code) for e in cancel] == [("own-ask", "SELF_MATCH_PREVENTED")]
    fills = [e for e in events if e.liquidity]
    assert {e.client_order_id for e in fills} == {"other-ask", "buy"}
    assert "own-ask" not in book and events[-1].exec_type is ExecType.FILL


@pytest.mark.parametrize(
    ("qty", "price", "code"),
    [
        ("1", "100.3", "INVALID_TICK"),
        ("1.5", "100", "INVALID_LOT"),
        ("0", "100", "INVALID_QUANTITY"),
        ("-2", "100", "INVALID_QUANTITY"),
        ("NaN", "100", "INVALID_QUANTITY"),
        ("1", "0", "INVALID_PRICE"),
    ],
)
def test_submit_when_quantity_or_price_invalid_then_rejected_with_code(
    book: OrderBook, qty: str, price: str, code: str
) -> None:
    events = book.submit(order("bad", Side.BUY, qty, price), 1)
    assert [(e.exec_type, e.reason_code) for e in events] == [(ExecType.REJECTED, code)]
    assert len(book) == 0


def test_fill_when_crossing_then_maker_and_taker_fees_charged(book: OrderBook) -> None:
    book.submit(order("ask", Side.SELL, "10", "100", account="m1"), 1)
    events = book.submit(order("buy", Side.BUY, "10", "100", account="t"), 2)
    fees = {e.liquidity: e.fee for e in events if e.liquidity}
    assert fees == {"MAKER": D("0.10000000"), "TAKER": D("0.50000000")}
    assert fee_for(D("1000"), D("5")) == D("0.5")


def test_cancel_when_resting_then_canceled_event_and_second_cancel_is_empty(book: OrderBook) -> None:
    book.submit(order("bid", Side.BUY, "3", "99"), 1)
    first = book.cancel("bid", 2)
    assert [(e.exec_type, e.leaves_qty) for e in first] == [(ExecType.CANCELED, D(0))]
    assert book.cancel("bid", 3) == []


# --------------------------------------------------------------------------- properties


@dataclass
class Tracked:
    quantity: Decimal
    arrival: int
    filled: Decimal = ZERO
    leaves: Decimal = ZERO
    cancelled: Decimal = ZERO
    terminal: bool = False


class Ledger:
    """Follows every client order through its events and checks the per-event invariants."""

    def __init__(self) -> None:
        self.orders: dict[str, Tracked] = {}
        self.buy_filled = D(0)
        self.sell_filled = D(0)

    def new(self, coid: str, qty: Decimal) -> None:
        self.orders[coid] = Tracked(quantity=qty, arrival=len(self.orders))

    def apply(self, events: list[VenueEvent], taker: str | None, taker_side: Side | None) -> None:
        maker_keys: list[tuple[Decimal, int]] = []
        taker_prices: list[Decimal] = []
        for e in events:
            t = self.orders[e.client_order_id]
            assert not t.terminal, f"event after terminal for {e.client_order_id}"
            if e.exec_type is ExecType.ACCEPTED:
                t.leaves = t.quantity
            elif e.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL):
                t.filled += e.last_qty
                t.leaves -= e.last_qty
                assert t.filled == e.cum_qty <= t.quantity
                assert e.leaves_qty == t.leaves == t.quantity - t.filled
                if e.side is Side.BUY:
                    self.buy_filled += e.last_qty
                else:
                    self.sell_filled += e.last_qty
                if e.liquidity == "MAKER" and e.client_order_id != taker:
                    maker_keys.append((e.last_price, t.arrival))
                if e.client_order_id == taker:
                    taker_prices.append(e.last_price)
            elif e.exec_type in (ExecType.CANCELED, ExecType.EXPIRED):
                t.cancelled += t.leaves
                t.leaves = D(0)
            elif e.exec_type is ExecType.REJECTED:
                t.cancelled = t.quantity
            t.terminal = e.exec_type in (ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED, ExecType.REJECTED)
        if taker_side is not None:
            # Price priority: a buy walks up the asks, a sell walks down the bids.
            ordered = sorted(taker_prices) if taker_side is Side.BUY else sorted(taker_prices, reverse=True)
            assert taker_prices == ordered
            # Time priority among makers at one price: earlier arrival first.
            for (p1, a1), (p2, a2) in itertools.pairwise(maker_keys):
                if p1 == p2:
                    assert a1 < a2

    def check_conservation(self, book_leaves: dict[str, Decimal]) -> None:
        for coid, t in self.orders.items():
            open_qty = book_leaves.get(coid, D(0))
            assert open_qty == (D(0) if t.terminal else t.leaves), coid
            assert t.filled + open_qty + t.cancelled == t.quantity, coid


op_strategy = st.one_of(
    st.tuples(
        st.just("new"),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.sampled_from([OrderType.LIMIT, OrderType.LIMIT, OrderType.MARKET]),
        st.sampled_from([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
        st.integers(1, 8),
        st.integers(-6, 6),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 200)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, min_size=1, max_size=60))
def test_book_properties_when_random_order_flow_then_invariants_hold(ops: list[tuple[object, ...]]) -> None:
    book = OrderBook(TEST_INSTRUMENT)
    ledger = Ledger()
    for n, op in enumerate(ops):
        if op[0] == "new":
            _, account, side, otype, tif, qty, offset = op
            assert isinstance(side, Side) and isinstance(otype, OrderType) and isinstance(tif, TimeInForce)
            assert isinstance(offset, int)
            coid = f"o{n}"
            price = str(D(100) + D(offset) * D("0.5")) if otype is OrderType.LIMIT else None
            ledger.new(coid, D(str(qty)))
            events = book.submit(order(coid, side, str(qty), price, account=str(account), tif=tif), n)
            ledger.apply(events, coid, side)
        else:
            ids = list(ledger.orders)
            if ids:
                index = op[1]
                assert isinstance(index, int)
                ledger.apply(book.cancel(ids[index % len(ids)], n), None, None)
        assert not crossed(book)
    assert ledger.buy_filled == ledger.sell_filled
    ledger.check_conservation({r.client_order_id: r.leaves_qty for r in book.resting_orders()})


venue_op = st.one_of(
    st.tuples(
        st.just("new"),
        st.sampled_from(["a", "b"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.sampled_from([OrderType.LIMIT, OrderType.MARKET]),
        st.sampled_from([TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
        st.integers(1, 40),
        st.integers(-30, 30),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 200)),
    st.tuples(st.just("advance"), st.integers(1, 3_600)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(venue_op, min_size=1, max_size=50), st.integers(0, 2**16))
def test_venue_properties_when_market_maker_on_then_invariants_hold(ops: list[tuple[object, ...]], seed: int) -> None:
    venue = SimVenue(SimVenueConfig(instruments=(instrument(3.0, lot="0.01"),), seed=seed))
    ledger = Ledger()
    now = 1_000_000_000
    for n, op in enumerate(ops):
        if op[0] == "new":
            _, account, side, otype, tif, lots, offset = op
            assert isinstance(side, Side) and isinstance(otype, OrderType) and isinstance(tif, TimeInForce)
            assert isinstance(lots, int) and isinstance(offset, int)
            ref = venue.reference_price("TST-USD")
            assert ref is not None
            price = (ref + D(offset) * D("0.05")).quantize(D("0.01")) if otype is OrderType.LIMIT else None
            qty = D(lots) * D("0.25")
            coid = f"o{n}"
            ledger.new(coid, qty)
            req = OrderRequest(coid, "s", str(account), "m", "TST-USD", side, otype, tif, qty, price)
            ledger.apply(venue.submit(req), coid, side)
        elif op[0] == "cancel":
            ids = list(ledger.orders)
            if ids:
                index = op[1]
                assert isinstance(index, int)
                ledger.apply(venue.cancel(ids[index % len(ids)]), None, None)
        else:
            step = op[1]
            assert isinstance(step, int)
            now += step * 1_000_000_000
            ledger.apply(venue.advance(now), None, None)
        assert not crossed(venue.book("TST-USD"))
    resting = {r.client_order_id: r.leaves_qty for r in venue.book("TST-USD").resting_orders()}
    ledger.check_conservation(resting)


# --------------------------------------------------------------------------- determinism


def run_script(seed: int) -> list[VenueEvent]:
    config = SimVenueConfig(seed=seed, latency=LatencyConfig(fixed_ns=1_000, jitter_ns=5_000))
    venue = SimVenue(config)
    events: list[VenueEvent] = []
    now = 1_700_000_000_000_000_000
    for i in range(40):
        now += 60_000_000_000
        events += venue.advance(now)
        ref = venue.reference_price("ETH-USD")
        assert ref is not None
        side = Side.BUY if i % 2 else Side.SELL
        price = (ref * (D("0.9997") if side is Side.BUY else D("1.0003"))).quantize(D("0.01"))
        events += venue.submit(
            OrderRequest(f"l{i}", "s", "acct", "m", "ETH-USD", side, OrderType.LIMIT, TimeInForce.GTC, D("1.5"), price)
        )
        if i % 5 == 0:
            events += venue.submit(
                OrderRequest(f"m{i}", "s", "acct2", "m", "BTC-USD", side, OrderType.MARKET, TimeInForce.IOC, D("0.5"))
            )
    return events


def test_determinism_when_same_seed_and_orders_then_identical_events() -> None:
    first, second = run_script(42), run_script(42)
    assert first == second
    assert any(e.liquidity == "MAKER" for e in first)  # resting orders were crossed by requotes


def test_determinism_when_seed_differs_then_price_path_differs() -> None:
    assert run_script(1) != run_script(2)


@pytest.mark.parametrize(
    ("qty", "price", "code"),
    [
        ("100000000000000000", "100.000000000001", None),  # 1e29 lots of 1e-12: a multiple, rests
        ("100000000000000000.0000000000005", "100", "INVALID_LOT"),
        ("1", "100.0000000000000000001", "INVALID_TICK"),
    ],
)
def test_validate_when_quantity_or_price_has_more_steps_than_28_digits_judges_it_exactly(
    qty: str, price: str, code: str | None
) -> None:
    fine = Instrument(symbol="FINE-USD", tick_size=D("1e-12"), lot_size=D("1e-12"), initial_price=D("100"))
    events = OrderBook(fine).submit(order("o", Side.BUY, qty, price), 1)
    assert [e.exec_type for e in events] == [ExecType.REJECTED if code else ExecType.ACCEPTED]
    assert events[0].reason_code == (code or "")


def test_instrument_when_its_lot_is_tiny_against_its_minimum_is_still_checked() -> None:
    assert Instrument(symbol="X", tick_size=D("0.01"), lot_size=D("1E-30"), min_qty=D("1"), initial_price=D("100"))
    off_the_lot = D("1.0000000000000000000000000000015")  # 1e30 lots and a half
    with pytest.raises(ValueError, match="min_qty must be a multiple of lot_size"):
        Instrument(symbol="X", tick_size=D("0.01"), lot_size=D("1E-30"), min_qty=off_the_lot, initial_price=D(1))


BIG_INSTRUMENT = instrument(lot="0.0001").model_copy(update={"symbol": "BTC-USD", "initial_price": D("60000")})
"""An instrument for wire-legal sizes at their largest: a quantity and a price below 1e18, on the lot and the tick,
whose product needs more digits than the default decimal context's 28."""


def test_fill_when_notional_needs_more_than_28_digits_then_fees_and_average_are_exact() -> None:
    qty, price = D("12345678901.2345"), D("123456789012345.67")
    book = OrderBook(BIG_INSTRUMENT)
    book.submit(BookOrder("m1", "v1", "acct-a", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, qty, price), 0)
    events = book.submit(BookOrder("t1", "v2", "acct-b", Side.SELL, OrderType.LIMIT, TimeInForce.IOC, qty, price), 0)
    fills = {e.client_order_id: e for e in events if e.exec_type is ExecType.FILL}
    notional = D("1524157875323875183661103.729615")  # qty x price, exact (31 digits)
    assert qty * price != notional  # the default context rounds it
    assert fills["m1"].fee == D("152415787532387518366.11037296")  # notional x 1 / 10000 = ...11037296|15, half-even
    assert fills["t1"].fee == D("762078937661937591830.55186481")  # notional x 5 / 10000 = ...55186480|75
    assert fills["m1"].avg_price == fills["t1"].avg_price == price
    assert book.resting("m1") is None


def test_venue_order_when_notional_needs_more_than_28_digits_then_every_fill_is_reported() -> None:
    """A taker that meets an ordinary ask and then a huge one: both makers' fills reach the ledger (the fee of the
    second once raised in the default context, the order came back VENUE_ERROR and the first fill was lost)."""
    venue = SimVenue(SimVenueConfig(name="sim", instruments=(BIG_INSTRUMENT,), seed=1))
    manager = OrderManager({"sim": venue})
    big_qty, big_price = D("12345678901.2345"), D("123456789012345.67")

    def request(coid: str, account: str, side: Side, qty: Decimal, price: Decimal) -> OrderRequest:
        return OrderRequest(coid, "s1", account, "m", "BTC-USD", side, OrderType.LIMIT, TimeInForce.GTC, qty, price)

    manager.submit("sim", request("small-ask", "acct-a", Side.SELL, D("1"), D("60000.00")))
    manager.submit("sim", request("huge-ask", "acct-a", Side.SELL, big_qty, big_price))
    reports = manager.submit("sim", request("taker", "acct-b", Side.BUY, big_qty + 10, big_price))
    assert all(r.reason_code != "VENUE_ERROR" for r in reports), [(r.client_order_id, r.reason_code) for r in reports]
    assert manager.get_order("small-ask").status is OrderStatus.FILLED
    assert manager.get_order("huge-ask").status is OrderStatus.FILLED
    taker = manager.get_order("taker")
    assert taker.filled_qty > big_qty  # the small ask, the market maker's asks and the huge one
    assert taker.fees == sum((r.fee for r in reports if r.client_order_id == "taker"), ZERO)
