"""The embedded ``sim`` venue: one order book per instrument plus a seeded synthetic market maker.

Time: the venue has no clock of its own unless one is injected. ``advance(now_ns)`` moves its market
(GBM step or replay position, then a requote); events from ``submit``/``cancel`` carry the injected
clock's time, or the last ``advance`` time when none was given, plus the simulated latency. Nothing
sleeps, so a run is a pure function of the config, the seed and the call sequence.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from decimal import Decimal

from engine_server.venues.base import (
    MARKET_MAKER_ACCOUNT,
    Instrument,
    OrderRequest,
    Quote,
    QuoteFeed,
    VenueAdapter,
    VenueEvent,
    VenueKind,
    VenueStatus,
    rejected_event,
)
from engine_server.venues.sim.book import BookOrder, OrderBook
from engine_server.venues.sim.config import SimVenueConfig
from engine_server.venues.sim.market_maker import (
    MM_ORDER_PREFIX,
    GbmPriceSource,
    MarketMaker,
    PriceSource,
    ReplayPriceSource,
)

log = logging.getLogger(__name__)

_TWO = Decimal(2)


class SimVenue(VenueAdapter):
    """A deterministic in-memory exchange.

    Args:
        config: Instruments, seed, market maker, latency, optional replay CSV.
        clock: Optional wall clock in ns for the timestamps of submit/cancel events.
        price_source: Overrides the GBM/replay source (the paper venue passes a follower).
    """

    kind: VenueKind = "live"

    def __init__(
        self,
        config: SimVenueConfig,
        *,
        clock: Callable[[], int] | None = None,
        price_source: PriceSource | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._clock = clock
        self._instruments: dict[str, Instrument] = {i.symbol: i for i in config.instruments}
        quiet = frozenset({MARKET_MAKER_ACCOUNT})
        self._books = {symbol: OrderBook(inst, quiet_accounts=quiet) for symbol, inst in self._instruments.items()}
        if price_source is None:
            if config.replay_csv is not None:
                price_source = ReplayPriceSource(config.replay_csv, config.instruments, config.replay_speed)
            else:
                price_source = GbmPriceSource(config.instruments, config.market_maker, config.seed)
        self._mm = MarketMaker(self._books, price_source, config.market_maker)
        # A separate generator so latency draws never shift the price path.
        self._latency_rng = random.Random(f"{config.seed}/latency")
        self._feed = QuoteFeed()
        self._now_ns = 0
        self._next_order_id = 0
        self._mm.requote(None, 0)
        self._publish()
        log.info("[SIM] venue %s ready: %s, seed %d", self.name, ",".join(self._instruments), config.seed)

    # ------------------------------------------------------------------ VenueAdapter

    def instruments(self) -> Mapping[str, Instrument]:
        return self._instruments

    def submit(self, req: OrderRequest) -> list[VenueEvent]:
        ts = self._stamp()
        book = self._books.get(req.symbol)
        if book is None:
            return [rejected_event(req, "UNKNOWN_INSTRUMENT", f"{self.name} does not trade {req.symbol}", ts)]
        if req.account == MARKET_MAKER_ACCOUNT:
            return [rejected_event(req, "RESERVED_ACCOUNT", f"account {req.account} is reserved", ts)]
        coid = req.client_order_id
        if not coid or coid.startswith(MM_ORDER_PREFIX):
            return [rejected_event(req, "INVALID_CLIENT_ORDER_ID", "client_order_id is empty or reserved", ts)]
        if any(coid in b for b in self._books.values()):
            return [rejected_event(req, "DUPLICATE_ORDER_ID", f"order {coid} is already resting", ts)]
        self._next_order_id += 1
        order = BookOrder(
            client_order_id=coid,
            venue_order_id=f"{self.name}-{self._next_order_id}",
            account=req.account,
            side=req.side,
            order_type=req.order_type,
            time_in_force=req.time_in_force,
            quantity=req.quantity,
            limit_price=req.limit_price,
        )
        return book.submit(order, ts)

    def cancel(self, client_order_id: str) -> list[VenueEvent]:
        for book in self._books.values():
            if client_order_id in book:
                return book.cancel(client_order_id, self._stamp())
        return []

    def advance(self, now_ns: int) -> list[VenueEvent]:
        self._now_ns = max(self._now_ns, now_ns)
        events = self._mm.requote(self._now_ns, self._now_ns + self._latency())
        self._publish()
        return events

    def quote(self, symbol: str) -> Quote | None:
        book = self._books.get(symbol)
        if book is None:
            return None
        bids, asks = book.depth_top()
        if bids is None or asks is None:
            return None
        (bid, bid_size), (ask, ask_size) = bids, asks
        return Quote(symbol, bid, ask, bid_size, ask_size, (bid + ask) / _TWO, self._time())

    def reference_price(self, symbol: str) -> Decimal | None:
        ref = self._mm.reference.get(symbol)
        return None if ref is None else ref.mid

    def status(self) -> VenueStatus:
        resting = sum(len(b) for b in self._books.values())
        return VenueStatus(
            name=self.name,
            kind=self.kind,
            connected=True,
            instruments=tuple(self._instruments),
            detail=f"embedded matching engine, seed {self.config.seed}, {resting} resting orders",
        )

    def quote_feed(self) -> QuoteFeed:
        return self._feed

    # ------------------------------------------------------------------ extras

    def book(self, symbol: str) -> OrderBook:
        """The order book of ``symbol`` (for tests, benchmarks and market data depth).

        Raises:
            KeyError: unknown symbol.
        """
        return self._books[symbol]

    def _publish(self) -> None:
        for quote in self._mm.reference.values():
            self._feed.publish(quote)

    def _time(self) -> int:
        return self._clock() if self._clock is not None else self._now_ns

    def _latency(self) -> int:
        lat = self.config.latency
        if lat is None:
            return 0
        jitter = self._latency_rng.randint(0, lat.jitter_ns) if lat.jitter_ns else 0
        return lat.fixed_ns + jitter

    def _stamp(self) -> int:
        return self._time() + self._latency()
