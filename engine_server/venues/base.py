"""The venue adapter interface and the value types every venue shares.

A venue turns order requests into venue events (accepted, fills, cancels, rejects). The engine's
execution ledger (``engine_server.order_manager``) adds the engine-wide ``seq`` and ``exec_id``;
a venue never numbers its events.

Venues are synchronous: the embedded ones (``sim``, ``paper``) are in-memory matching engines, and an
adapter for an external venue runs its network I/O on its own task and feeds the same calls, so the
ledger sees one shape whatever sits behind it.

Read-only market data flows through a :class:`QuoteFeed`. A shadow (paper) venue receives only the
feed's ``get`` method, so the type system (not an ``if``) keeps it from ever reaching a live adapter.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import pydantic

from nautilus_mesh.config import StrictModel
from nautilus_mesh.decimals import MAX_INTEGER_DIGITS, is_multiple
from nautilus_mesh.frozen import quick_init

WIRE_DECIMAL_LIMIT = Decimal(10) ** MAX_INTEGER_DIGITS
"""Instrument sizes and prices stay below what a wire decimal may carry (1e18): ops reads them back from the wire."""

VenueKind = Literal["live", "paper"]

# The account the synthetic market maker trades under. Client orders may not use it.
MARKET_MAKER_ACCOUNT = "__market_maker__"

ZERO = Decimal(0)


class Side(StrEnum):
    """Order side."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """Order type. A MARKET order never rests; its unfilled remainder is cancelled."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(StrEnum):
    """How long an order may live: good till cancel, immediate or cancel, fill or kill."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class ExecType(StrEnum):
    """What a venue event reports."""

    ACCEPTED = "ACCEPTED"
    PARTIAL_FILL = "PARTIAL_FILL"
    FILL = "FILL"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Instrument(StrictModel):
    """A tradable instrument and its venue rules, as a venue config's ``instruments[]`` entry (decimals as strings
    or numbers)."""

    symbol: str = pydantic.Field(min_length=1)
    """Venue symbol such as ``BTC-USD``."""
    tick_size: Decimal = pydantic.Field(gt=0, lt=WIRE_DECIMAL_LIMIT)
    """Every limit price is a whole multiple of it."""
    lot_size: Decimal = pydantic.Field(gt=0, lt=WIRE_DECIMAL_LIMIT)
    """Every quantity is a whole multiple of it."""
    min_qty: Decimal = pydantic.Field(lt=WIRE_DECIMAL_LIMIT)
    """Smallest accepted quantity; a multiple of ``lot_size``, at least one lot (default: ``lot_size``)."""
    maker_fee_bps: Decimal = pydantic.Field(default=Decimal(0), ge=-1000, le=1000)
    """Fee on resting (maker) fills, in basis points of notional; may be negative (a rebate)."""
    taker_fee_bps: Decimal = pydantic.Field(default=Decimal(0), ge=0, le=1000)
    """Fee on aggressing (taker) fills, in basis points of notional."""
    initial_price: Decimal = pydantic.Field(gt=0, lt=WIRE_DECIMAL_LIMIT)
    """Where the synthetic market starts; a multiple of ``tick_size``."""
    volatility: float = pydantic.Field(default=0.5, ge=0.0, le=10.0, allow_inf_nan=False)
    """Annualised volatility of the synthetic GBM mid (0.6 = 60 %)."""
    drift: float = pydantic.Field(default=0.0, ge=-1e5, le=1e5, allow_inf_nan=False)
    """Annualised drift of the synthetic GBM mid (0 = driftless; a demo market may trend)."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _min_qty_defaults_to_one_lot(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "min_qty" not in data and "lot_size" in data:
            return {**data, "min_qty": data["lot_size"]}
        return data

    @pydantic.model_validator(mode="after")
    def _multiples(self) -> Instrument:
        if self.min_qty < self.lot_size:
            raise ValueError(f"{self.symbol}: min_qty must be >= lot_size")
        if not is_multiple(self.min_qty, self.lot_size):
            raise ValueError(f"{self.symbol}: min_qty must be a multiple of lot_size")
        if not is_multiple(self.initial_price, self.tick_size):
            raise ValueError(f"{self.symbol}: initial_price must be a multiple of tick_size")
        return self


@quick_init
@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A new order as the engine receives it.

    Args:
        client_order_id: Deterministic id chosen by ops; unique engine-wide.
        session_id: The order stream session it arrived on (for cancel-on-disconnect and rate limits).
        account: Trading account; orders of one account never trade with each other.
        model_id: The model the order belongs to.
        symbol: Instrument symbol.
        side: BUY or SELL.
        order_type: MARKET or LIMIT.
        time_in_force: GTC, IOC or FOK.
        quantity: Ordered quantity.
        limit_price: Required for LIMIT, must be None for MARKET.
        trace: Opaque W3C trace context (``traceparent``, ``tracestate``) carried into every report.
    """

    client_order_id: str
    session_id: str
    account: str
    model_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None = None
    trace: Mapping[str, str] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class VenueEvent:
    """One event a venue emits about one client order (no sequence number: the ledger adds it).

    ``last_qty``/``last_price``/``fee`` describe this event's fill (zero otherwise); ``cum_qty``,
    ``leaves_qty`` and ``avg_price`` describe the order after it. A CANCELED or EXPIRED event has
    ``leaves_qty`` 0; the cancelled amount is the previous ``leaves_qty``.
    """

    exec_type: ExecType
    client_order_id: str
    venue_order_id: str
    symbol: str
    side: Side
    last_qty: Decimal
    last_price: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_price: Decimal
    fee: Decimal
    liquidity: str
    reason_code: str
    reason_text: str
    ts_ns: int


def rejected_event(req: OrderRequest, code: str, text: str, ts_ns: int) -> VenueEvent:
    """The REJECTED event for a request that never reached a book."""
    return VenueEvent(
        exec_type=ExecType.REJECTED,
        client_order_id=req.client_order_id,
        venue_order_id="",
        symbol=req.symbol,
        side=req.side,
        last_qty=ZERO,
        last_price=ZERO,
        cum_qty=ZERO,
        leaves_qty=ZERO,
        avg_price=ZERO,
        fee=ZERO,
        liquidity="",
        reason_code=code,
        reason_text=text,
        ts_ns=ts_ns,
    )


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book of one instrument."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    mid: Decimal
    ts_ns: int


@dataclass(frozen=True, slots=True)
class VenueStatus:
    """What ``ListVenues`` shows for a venue."""

    name: str
    kind: VenueKind
    connected: bool
    instruments: tuple[str, ...]
    detail: str


QuoteSource = Callable[[str], Quote | None]
"""A read-only source of reference quotes by symbol: all a paper venue gets from the live side."""


class QuoteFeed:
    """The reference quotes a venue publishes for others to read.

    It holds plain :class:`Quote` values and no reference to its venue, so handing out
    ``feed.get`` gives read access to prices and nothing else.
    """

    __slots__ = ("_quotes",)

    def __init__(self) -> None:
        self._quotes: dict[str, Quote] = {}

    def get(self, symbol: str) -> Quote | None:
        """The latest reference quote of ``symbol``, or None before the first one."""
        return self._quotes.get(symbol)

    def publish(self, quote: Quote) -> None:
        """Replace the reference quote of ``quote.symbol`` (called by the owning venue only)."""
        self._quotes[quote.symbol] = quote


class VenueAdapter(abc.ABC):
    """A place orders execute. Subclasses set ``name`` and ``kind`` and implement the calls below.

    Every call is synchronous and returns the events it caused, for the order it names and for
    any other client order it touched (a resting order filled or cancelled by self-match
    prevention). Events are for client orders only; a venue's own liquidity stays internal.
    """

    name: str
    kind: VenueKind

    @abc.abstractmethod
    def instruments(self) -> Mapping[str, Instrument]:
        """The instruments this venue trades, by symbol."""

    @abc.abstractmethod
    def submit(self, req: OrderRequest) -> list[VenueEvent]:
        """Submit a new order; the first event is ACCEPTED or REJECTED.

        Raises:
            VenueRejectedError: the venue cannot take orders at all (e.g. not connected).
        """

    @abc.abstractmethod
    def cancel(self, client_order_id: str) -> list[VenueEvent]:
        """Cancel a resting order; an empty list when it is not resting (unknown or already done)."""

    @abc.abstractmethod
    def advance(self, now_ns: int) -> list[VenueEvent]:
        """Move the venue's market to ``now_ns``; returns events of client orders that traded."""

    @abc.abstractmethod
    def quote(self, symbol: str) -> Quote | None:
        """Top of the book, or None when either side is empty or the symbol is unknown."""

    @abc.abstractmethod
    def reference_price(self, symbol: str) -> Decimal | None:
        """The fair price venue rails compare orders with (None when unknown)."""

    @abc.abstractmethod
    def status(self) -> VenueStatus:
        """Health and identity for ``ListVenues``."""

    def quote_feed(self) -> QuoteFeed | None:
        """The read-only reference quotes other venues (paper) may follow; None when not offered."""
        return None
