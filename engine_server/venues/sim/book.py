"""A price-time priority limit order book for one instrument.

Matching rules (the contract the property tests check):

- Better price first; at one price, earlier order first. A fill trades at the resting order's price.
- MARKET orders never rest: whatever does not fill at once is CANCELED (``MARKET_REMAINDER``).
- IOC: the unfilled remainder is CANCELED (``IOC_REMAINDER``). FOK: the book is checked first; if the
  whole quantity cannot fill, nothing fills and the order is EXPIRED (``FOK_NOT_FILLABLE``).
- Self-match prevention, "cancel resting" (CME's default): when an incoming order would trade with a
  resting order of the same account, the resting order is CANCELED (``SELF_MATCH_PREVENTED``) and
  matching continues with the next one.
- After matching the book is never crossed and no order is ever filled beyond its quantity.
- Fees: ``notional * bps / 10000`` quantised to 1e-8, maker bps for the resting side, taker for the incoming.

Orders of ``quiet_accounts`` (the venue's market maker) trade normally but emit no events.
"""

from __future__ import annotations

import logging
from bisect import insort
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from engine_server.venues.base import (
    ZERO,
    ExecType,
    Instrument,
    OrderType,
    Side,
    TimeInForce,
    VenueEvent,
)
from nautilus_mesh.decimals import EXACT, is_multiple
from nautilus_mesh.frozen import quick_init

log = logging.getLogger(__name__)

FEE_QUANTUM = Decimal("0.00000001")
PRICE_QUANTUM = Decimal("0.00000001")
_BPS = Decimal(10000)


@quick_init
@dataclass(frozen=True, slots=True)
class BookOrder:
    """An order as the book sees it (the venue fills in the venue order id)."""

    client_order_id: str
    venue_order_id: str
    account: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None


class _Live:
    """Mutable working state of an order in (or passing through) the book."""

    __slots__ = (
        "account",
        "client_order_id",
        "cum_qty",
        "leaves",
        "notional",
        "price",
        "quiet",
        "side",
        "venue_order_id",
    )

    def __init__(self, order: BookOrder, quiet: bool) -> None:
        self.client_order_id = order.client_order_id
        self.venue_order_id = order.venue_order_id
        self.account = order.account
        self.side = order.side
        self.price = order.limit_price
        self.leaves = order.quantity
        self.cum_qty = ZERO
        self.notional = ZERO
        self.quiet = quiet


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """A read-only snapshot of a resting order."""

    client_order_id: str
    venue_order_id: str
    account: str
    side: Side
    price: Decimal
    leaves_qty: Decimal
    cum_qty: Decimal


def fee_for(notional: Decimal, bps: Decimal) -> Decimal:
    """Fee of a fill: ``notional * bps / 10000`` quantised to 1e-8 (half-even), computed exactly (:data:`EXACT`)."""
    return EXACT.quantize(EXACT.divide(EXACT.multiply(notional, bps), _BPS), FEE_QUANTUM)


class OrderBook:
    """Limit order book of one instrument.

    Args:
        instrument: Tick, lot, minimum quantity and fees come from it.
        quiet_accounts: Accounts whose orders emit no events (the venue's own market maker).
    """

    def __init__(self, instrument: Instrument, *, quiet_accounts: frozenset[str] = frozenset()) -> None:
        self.instrument = instrument
        self._quiet = quiet_accounts
        # Price levels: FIFO queues keyed by price plus a sorted price list per side.
        # Bids are sorted ascending too; the best bid is the last element.
        self._bids: dict[Decimal, deque[_Live]] = {}
        self._asks: dict[Decimal, deque[_Live]] = {}
        self._bid_prices: list[Decimal] = []
        self._ask_prices: list[Decimal] = []
        self._index: dict[str, _Live] = {}

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> Decimal | None:
        """Highest resting bid price."""
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask(self) -> Decimal | None:
        """Lowest resting ask price."""
        return self._ask_prices[0] if self._ask_prices else None

    def depth(self, side: Side, levels: int = 5) -> list[tuple[Decimal, Decimal]]:
        """Aggregated (price, quantity) of the best ``levels`` levels of one side, best first."""
        if side is Side.BUY:
            prices = self._bid_prices[::-1][:levels]
            book = self._bids
        else:
            prices = self._ask_prices[:levels]
            book = self._asks
        return [(p, sum((o.leaves for o in book[p]), ZERO)) for p in prices]

    def depth_top(self) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        """(price, size) of the best bid and the best ask; None for an empty side."""
        bids = self.depth(Side.BUY, 1)
        asks = self.depth(Side.SELL, 1)
        return (bids[0] if bids else None), (asks[0] if asks else None)

    def resting(self, client_order_id: str) -> RestingOrder | None:
        """Snapshot of a resting order, or None when it is not in the book."""
        live = self._index.get(client_order_id)
        if live is None or live.price is None:
            return None
        return RestingOrder(
            client_order_id=live.client_order_id,
            venue_order_id=live.venue_order_id,
            account=live.account,
            side=live.side,
            price=live.price,
            leaves_qty=live.leaves,
            cum_qty=live.cum_qty,
        )

    def resting_orders(self) -> list[RestingOrder]:
        """Snapshots of every resting order (bids best first, then asks best first)."""
        out: list[RestingOrder] = []
        for prices, book in ((self._bid_prices[::-1], self._bids), (self._ask_prices, self._asks)):
            for price in prices:
                for live in book[price]:
                    snap = self.resting(live.client_order_id)
                    if snap is not None:
                        out.append(snap)
        return out

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    # ------------------------------------------------------------------ commands

    def submit(self, order: BookOrder, ts_ns: int) -> list[VenueEvent]:
        """Validate, match and (GTC limit) rest one order; returns the events of every client order touched."""
        reject = self._validate(order)
        quiet = order.account in self._quiet
        if reject is not None:
            code, text = reject
            if quiet:
                log.error("[SIM-BOOK] %s: market maker order rejected: %s", self.instrument.symbol, text)
                return []
            return [self._event(ExecType.REJECTED, _Live(order, False), ts_ns, code=code, text=text)]
        taker = _Live(order, quiet)
        events: list[VenueEvent] = []
        if not quiet:
            events.append(self._event(ExecType.ACCEPTED, taker, ts_ns))
        limit = order.limit_price if order.order_type is OrderType.LIMIT else None
        if order.time_in_force is TimeInForce.FOK and self._fillable(taker, limit) < order.quantity:
            if not quiet:
                text = "fill-or-kill order cannot fill entirely"
                events.append(self._terminal(ExecType.EXPIRED, taker, ts_ns, "FOK_NOT_FILLABLE", text))
            return events
        self._match(taker, limit, events, ts_ns)
        if taker.leaves > 0:
            if order.order_type is OrderType.MARKET:
                text = "market order remainder cancelled: no more liquidity"
                if not quiet:
                    events.append(self._terminal(ExecType.CANCELED, taker, ts_ns, "MARKET_REMAINDER", text))
            elif order.time_in_force is not TimeInForce.GTC:
                text = "immediate-or-cancel remainder cancelled"
                if not quiet:
                    events.append(self._terminal(ExecType.CANCELED, taker, ts_ns, "IOC_REMAINDER", text))
            else:
                self._rest(taker)
        return events

    def cancel(
        self,
        client_order_id: str,
        ts_ns: int,
        *,
        code: str = "CANCELED_BY_CLIENT",
        text: str = "cancelled on request",
    ) -> list[VenueEvent]:
        """Remove a resting order; returns its CANCELED event (none when absent or quiet)."""
        live = self._index.get(client_order_id)
        if live is None:
            return []
        self._unlink(live)
        if live.quiet:
            return []
        return [self._terminal(ExecType.CANCELED, live, ts_ns, code, text)]

    # ------------------------------------------------------------------ internals

    def _validate(self, order: BookOrder) -> tuple[str, str] | None:
        inst = self.instrument
        qty = order.quantity
        if not qty.is_finite() or qty <= 0:
            return "INVALID_QUANTITY", f"quantity must be a positive number, got {qty}"
        if qty < inst.min_qty:
            return "INVALID_QUANTITY", f"quantity {qty} is below the minimum {inst.min_qty}"
        if not is_multiple(qty, inst.lot_size):
            return "INVALID_LOT", f"quantity {qty} is not a multiple of the lot size {inst.lot_size}"
        price = order.limit_price
        if order.order_type is OrderType.MARKET:
            if price is not None:
                return "INVALID_PRICE", "a MARKET order must not carry a limit price"
            return None
        if price is None or not price.is_finite() or price <= 0:
            return "INVALID_PRICE", "a LIMIT order needs a positive limit price"
        if not is_multiple(price, inst.tick_size):
            return "INVALID_TICK", f"price {price} is not a multiple of the tick size {inst.tick_size}"
        return None

    def _fillable(self, taker: _Live, limit: Decimal | None) -> Decimal:
        """Quantity the taker could fill now, ignoring its own account's orders (they would be cancelled)."""
        need = taker.leaves
        total = ZERO
        if taker.side is Side.BUY:
            prices = iter(self._ask_prices)
            book = self._asks
        else:
            prices = reversed(self._bid_prices)
            book = self._bids
        for price in prices:
            if limit is not None and (price > limit if taker.side is Side.BUY else price < limit):
                break
            for maker in book[price]:
                if maker.account != taker.account:
                    total += maker.leaves
                    if total >= need:
                        return total
        return total

    def _match(self, taker: _Live, limit: Decimal | None, events: list[VenueEvent], ts_ns: int) -> None:
        buying = taker.side is Side.BUY
        prices = self._ask_prices if buying else self._bid_prices
        book = self._asks if buying else self._bids
        inst = self.instrument
        while taker.leaves > 0 and prices:
            best = prices[0] if buying else prices[-1]
            if limit is not None and (best > limit if buying else best < limit):
                break
            queue = book[best]
            while queue and taker.leaves > 0:
                maker = queue[0]
                if maker.account == taker.account:
                    queue.popleft()
                    del self._index[maker.client_order_id]
                    if not maker.quiet:
                        text = f"resting order cancelled: incoming order {taker.client_order_id} of the same account"
                        events.append(self._terminal(ExecType.CANCELED, maker, ts_ns, "SELF_MATCH_PREVENTED", text))
                    continue
                qty = min(taker.leaves, maker.leaves)
                notional = EXACT.multiply(qty, best)
                maker_event = self._fill(maker, qty, best, fee_for(notional, inst.maker_fee_bps), "MAKER", ts_ns)
                taker_event = self._fill(taker, qty, best, fee_for(notional, inst.taker_fee_bps), "TAKER", ts_ns)
                if maker_event is not None:
                    events.append(maker_event)
                if taker_event is not None:
                    events.append(taker_event)
                if maker.leaves == 0:
                    queue.popleft()
                    del self._index[maker.client_order_id]
            if not queue:
                del book[best]
                if buying:
                    prices.pop(0)
                else:
                    prices.pop()

    def _fill(self, live: _Live, qty: Decimal, price: Decimal, fee: Decimal, liq: str, ts_ns: int) -> VenueEvent | None:
        live.leaves -= qty
        live.cum_qty += qty
        live.notional = EXACT.add(live.notional, EXACT.multiply(qty, price))
        if live.quiet:
            return None
        exec_type = ExecType.FILL if live.leaves == 0 else ExecType.PARTIAL_FILL
        return self._event(exec_type, live, ts_ns, last_qty=qty, last_price=price, fee=fee, liquidity=liq)

    def _rest(self, live: _Live) -> None:
        price = live.price
        assert price is not None  # only LIMIT orders rest
        if live.side is Side.BUY:
            book, prices = self._bids, self._bid_prices
        else:
            book, prices = self._asks, self._ask_prices
        queue = book.get(price)
        if queue is None:
            queue = book[price] = deque()
            insort(prices, price)
        queue.append(live)
        self._index[live.client_order_id] = live

    def _unlink(self, live: _Live) -> None:
        price = live.price
        assert price is not None
        if live.side is Side.BUY:
            book, prices = self._bids, self._bid_prices
        else:
            book, prices = self._asks, self._ask_prices
        queue = book[price]
        queue.remove(live)
        if not queue:
            del book[price]
            prices.remove(price)
        del self._index[live.client_order_id]

    @staticmethod
    def _avg(live: _Live) -> Decimal:
        if live.cum_qty == 0:
            return ZERO
        return EXACT.quantize(EXACT.divide(live.notional, live.cum_qty), PRICE_QUANTUM)

    def _terminal(self, exec_type: ExecType, live: _Live, ts_ns: int, code: str, text: str) -> VenueEvent:
        """A CANCELED/EXPIRED event; the remaining quantity leaves the book."""
        live.leaves = ZERO
        return self._event(exec_type, live, ts_ns, code=code, text=text)

    def _event(
        self,
        exec_type: ExecType,
        live: _Live,
        ts_ns: int,
        *,
        code: str = "",
        text: str = "",
        last_qty: Decimal = ZERO,
        last_price: Decimal = ZERO,
        fee: Decimal = ZERO,
        liquidity: str = "",
    ) -> VenueEvent:
        """The event of ``live`` as it stands (a fill's quantity, price, fee and liquidity when given)."""
        leaves = ZERO if exec_type is ExecType.REJECTED else live.leaves
        return VenueEvent(
            exec_type=exec_type,
            client_order_id=live.client_order_id,
            venue_order_id=live.venue_order_id,
            symbol=self.instrument.symbol,
            side=live.side,
            last_qty=last_qty,
            last_price=last_price,
            cum_qty=live.cum_qty,
            leaves_qty=leaves,
            avg_price=self._avg(live),
            fee=fee,
            liquidity=liquidity,
            reason_code=code,
            reason_text=text,
            ts_ns=ts_ns,
        )
