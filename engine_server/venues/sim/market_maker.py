"""Synthetic liquidity for the sim and paper venues.

A *price source* says where the inside quote is at a given time; the :class:`MarketMaker` turns that
into a ladder of resting orders on each book:

- :class:`GbmPriceSource`: a seeded geometric Brownian motion mid per instrument (drift per instrument, 0 by default,
  the instrument's annualised volatility), quoted at ``spread_bps`` around the mid.
- :class:`ReplayPriceSource`: a CSV of recorded quotes replayed at a chosen speed.
- :class:`FollowPriceSource`: copies another venue's published reference quotes (the paper venue).

On every requote the market maker pulls its old orders and submits the new ladder as *incoming*
orders, so a resting client order that the new quotes cross is filled at the client's price with
the client as MAKER, which is what a real exchange does. Market maker orders are "quiet": they
trade normally but only the client side of a trade produces events.

Ladder (the same for every source, so a paper venue following a live venue rebuilds the same book):
level ``i`` bid = floor_tick(bid0 * (1 - i * step / 10000)), ask = ceil_tick(ask0 * (1 + i * step / 10000)),
each strictly outside the previous one, with the inside sizes on every level.
"""

from __future__ import annotations

import csv
import logging
import math
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from engine_server.venues.base import (
    MARKET_MAKER_ACCOUNT,
    Instrument,
    OrderType,
    Quote,
    QuoteSource,
    Side,
    TimeInForce,
    VenueEvent,
)
from engine_server.venues.sim.book import BookOrder, OrderBook
from engine_server.venues.sim.config import MarketMakerConfig
from nautilus_mesh.errors import ConfigError

log = logging.getLogger(__name__)

NS_PER_YEAR = 365.0 * 24 * 3600 * 1e9
_BPS = Decimal(10000)
_TWO = Decimal(2)
# Client order ids with this prefix are reserved for the market maker's own orders.
MM_ORDER_PREFIX = "__mm__"
REPLAY_COLUMNS = ("ts", "symbol", "bid", "ask", "bid_size", "ask_size")


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` not above ``value``."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of ``step`` not below ``value``."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def make_quote(inst: Instrument, bid: Decimal, ask: Decimal, bid_size: Decimal, ask_size: Decimal, ts_ns: int) -> Quote:
    """A quote snapped to the instrument's grid: bid down and ask up to ticks, sizes down to lots (>= min)."""
    bid = floor_to(bid, inst.tick_size)
    ask = ceil_to(ask, inst.tick_size)
    if ask <= bid:
        ask = bid + inst.tick_size
    bid_size = max(floor_to(bid_size, inst.lot_size), inst.min_qty)
    ask_size = max(floor_to(ask_size, inst.lot_size), inst.min_qty)
    return Quote(inst.symbol, bid, ask, bid_size, ask_size, (bid + ask) / _TWO, ts_ns)


class PriceSource(Protocol):
    """Where the inside quote of an instrument is."""

    def top(self, inst: Instrument, now_ns: int | None) -> Quote | None:
        """The inside quote at ``now_ns`` (None: the current one, without moving time); None if unknown."""
        ...


class GbmPriceSource:
    """A seeded GBM mid per instrument, quoted ``spread_bps`` wide with the configured level size.

    Time starts at the first ``now_ns`` it sees, so a venue created at any wall-clock time does not
    jump by decades on its first step.
    """

    def __init__(self, instruments: Sequence[Instrument], mm: MarketMakerConfig, seed: int) -> None:
        self._rng = random.Random(seed)
        self._mm = mm
        self._mid = {i.symbol: float(i.initial_price) for i in instruments}
        self._last_ns: dict[str, int] = {}
        self._size = {i.symbol: level_size(i, mm) for i in instruments}

    def top(self, inst: Instrument, now_ns: int | None) -> Quote | None:
        symbol = inst.symbol
        mid = self._mid[symbol]
        if now_ns is not None:
            last = self._last_ns.get(symbol)
            if last is not None and now_ns > last:
                dt = (now_ns - last) / NS_PER_YEAR
                sigma = inst.volatility
                z = self._rng.gauss(0.0, 1.0)
                mid *= math.exp((inst.drift - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * z)
                # Keep the synthetic price well above one tick so quotes stay meaningful.
                mid = max(mid, float(inst.tick_size) * 100)
                self._mid[symbol] = mid
            if last is None or now_ns > last:
                self._last_ns[symbol] = now_ns
        dmid = Decimal(repr(mid))
        half = self._mm.spread_bps / _TWO / _BPS
        size = self._size[symbol]
        return make_quote(inst, dmid * (1 - half), dmid * (1 + half), size, size, now_ns or 0)


def level_size(inst: Instrument, mm: MarketMakerConfig) -> Decimal:
    """Quantity per market maker level: the per-symbol override or ``level_notional`` at the initial price."""
    size = mm.level_size.get(inst.symbol)
    if size is None:
        size = mm.level_notional / inst.initial_price
    return max(floor_to(size, inst.lot_size), inst.min_qty)


class ReplayPriceSource:
    """Recorded quotes replayed against the venue clock.

    The replay clock starts at the CSV's first ``ts`` on the first ``now_ns`` seen and runs at
    ``speed`` times the venue clock. Before a symbol's first row its first row is quoted; after the
    last row the last one is held.
    """

    def __init__(self, path: Path, instruments: Sequence[Instrument], speed: float) -> None:
        self._speed = speed
        self._rows = load_replay_csv(path, {i.symbol: i for i in instruments})
        self._start_ts = min(rows[0][0] for rows in self._rows.values()) if self._rows else 0
        self._end_ts = max(rows[-1][0] for rows in self._rows.values()) if self._rows else 0
        self._times = {symbol: [ts for ts, _ in rows] for symbol, rows in self._rows.items()}
        self._anchor_ns: int | None = None
        self._replay_ts = self._start_ts
        self._finished = False

    def top(self, inst: Instrument, now_ns: int | None) -> Quote | None:
        if now_ns is not None:
            if self._anchor_ns is None:
                self._anchor_ns = now_ns
            self._replay_ts = self._start_ts + int((now_ns - self._anchor_ns) * self._speed)
            if self._replay_ts > self._end_ts and not self._finished:
                self._finished = True
                log.info("[SIM] replay finished; holding the last quotes")
        rows = self._rows.get(inst.symbol)
        if not rows:
            return None
        idx = max(bisect_right(self._times[inst.symbol], self._replay_ts) - 1, 0)
        return rows[idx][1]


def load_replay_csv(path: Path, instruments: Mapping[str, Instrument]) -> dict[str, list[tuple[int, Quote]]]:
    """Read a replay CSV into per-symbol (ts, quote) lists sorted by ts; rows of other symbols are skipped.

    Raises:
        ConfigError: missing columns or a malformed row (with its line number).
    """
    out: dict[str, list[tuple[int, Quote]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REPLAY_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: replay CSV is missing columns {missing}")
            for lineno, row in enumerate(reader, 2):
                inst = instruments.get(row["symbol"])
                if inst is None:
                    continue
                try:
                    ts = int(row["ts"])
                    bid, ask = Decimal(row["bid"]), Decimal(row["ask"])
                    bid_size, ask_size = Decimal(row["bid_size"]), Decimal(row["ask_size"])
                except (ValueError, InvalidOperation):
                    raise ConfigError(f"{path}:{lineno}: malformed replay row") from None
                values = (bid, ask, bid_size, ask_size)
                if not all(v.is_finite() and v > 0 for v in values) or bid >= ask:
                    raise ConfigError(f"{path}:{lineno}: need positive sizes and 0 < bid < ask")
                out.setdefault(inst.symbol, []).append((ts, make_quote(inst, bid, ask, bid_size, ask_size, ts)))
    except OSError as exc:
        raise ConfigError(f"cannot read replay CSV {path}: {exc}") from None
    for rows in out.values():
        rows.sort(key=lambda r: r[0])
    return out


class FollowPriceSource:
    """Copies another venue's reference quotes through a read-only :data:`QuoteSource`."""

    def __init__(self, quote_source: QuoteSource) -> None:
        self._source = quote_source

    def top(self, inst: Instrument, now_ns: int | None) -> Quote | None:
        quote = self._source(inst.symbol)
        if quote is None:
            return None
        return make_quote(inst, quote.bid, quote.ask, quote.bid_size, quote.ask_size, now_ns or quote.ts_ns)


class MarketMaker:
    """Quotes a ladder on every book from a price source.

    Args:
        books: The venue's books by symbol (the market maker trades on them as ``MARKET_MAKER_ACCOUNT``).
        source: Where the inside quote is.
        config: Levels and level spacing.
    """

    def __init__(self, books: Mapping[str, OrderBook], source: PriceSource, config: MarketMakerConfig) -> None:
        self._books = books
        self._source = source
        self._config = config
        self._step = config.level_step_bps / _BPS
        self._open: dict[str, list[str]] = {symbol: [] for symbol in books}
        self._next_id = 0
        self.reference: dict[str, Quote] = {}

    def requote(self, now_ns: int | None, ts_ns: int) -> list[VenueEvent]:
        """Move the market to ``now_ns`` and replace every ladder; returns client events from crossed orders."""
        events: list[VenueEvent] = []
        for symbol, book in self._books.items():
            top = self._source.top(book.instrument, now_ns)
            if top is None:
                continue  # no price yet: keep whatever is quoted
            for coid in self._open[symbol]:
                book.cancel(coid, ts_ns)
            opened: list[str] = []
            for side, price, qty in self._ladder(book.instrument, top):
                self._next_id += 1
                coid = f"{MM_ORDER_PREFIX}{symbol}-{self._next_id}"
                order = BookOrder(coid, coid, MARKET_MAKER_ACCOUNT, side, OrderType.LIMIT, TimeInForce.GTC, qty, price)
                events.extend(book.submit(order, ts_ns))
                if coid in book:
                    opened.append(coid)
            self._open[symbol] = opened
            self.reference[symbol] = Quote(symbol, top.bid, top.ask, top.bid_size, top.ask_size, top.mid, ts_ns)
        return events

    def _ladder(self, inst: Instrument, top: Quote) -> list[tuple[Side, Decimal, Decimal]]:
        tick = inst.tick_size
        out: list[tuple[Side, Decimal, Decimal]] = []
        bid, ask = top.bid, top.ask
        for i in range(self._config.levels):
            if i > 0:
                offset = self._step * i
                bid = min(floor_to(top.bid * (1 - offset), tick), bid - tick)
                ask = max(ceil_to(top.ask * (1 + offset), tick), ask + tick)
            if bid > 0:
                out.append((Side.BUY, bid, top.bid_size))
            out.append((Side.SELL, ask, top.ask_size))
        return out
