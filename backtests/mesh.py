"""Ops and the engine wired in one process on a simulated clock: the live code path at full speed.

- The engine is the real :class:`~engine_server.engine_core.EngineCore` over a real :class:`OrderManager`, with the
  embedded sim venue (matching, market maker, fees, venue rails) and the paper venue that follows it. The sim
  venue's price source is the tape (:class:`TapePriceSource`) instead of its GBM.
- Ops is the real :class:`~ops_server.core.OpsCore` (signal path, rails, measurement, allocator, canary
  controller), built with a :class:`~nautilus_mesh.clock.SimClock` and an :class:`InProcessEngineLink` in place of
  the gRPC link: commands go straight into ``EngineCore.execute`` and the session's report frames come straight
  back to ops, in order, with no network and no event loop in between.

Nothing here decides differently from production: it only replaces the transport and the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from backtests.tape import TapeQuote
from engine_server import wire as engine_wire
from engine_server.engine_core import EngineCore
from engine_server.venues import VenueConfig
from engine_server.venues.base import Instrument, Quote
from engine_server.venues.sim.config import MarketMakerConfig, default_instruments
from engine_server.venues.sim.market_maker import level_size, make_quote
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2
from nautilus_mesh.clock import REAL_CLOCK, Clock
from ops_server.engine_link import EngineLink

SESSION_ID = "ops-backtest"
"""The one order session of a backtest (fixed, so reports are reproducible)."""


class TapePriceSource:
    """The sim venue's price source in a backtest: the tape's latest quote per instrument.

    Quotes are snapped to the instrument's tick and lot grid exactly as the engine's replay does; a quote without
    sizes is quoted with the market maker's level size.
    """

    def __init__(self, instruments: Sequence[Instrument], market_maker: MarketMakerConfig) -> None:
        self._instruments = {i.symbol: i for i in instruments}
        self._sizes = {i.symbol: level_size(i, market_maker) for i in instruments}
        self._quotes: dict[str, Quote] = {}

    def set(self, quote: TapeQuote) -> None:
        """Make ``quote`` the inside quote of its instrument (an unknown instrument is ignored)."""
        inst = self._instruments.get(quote.symbol)
        if inst is None:
            return
        size = self._sizes[quote.symbol]
        self._quotes[quote.symbol] = make_quote(
            inst, quote.bid, quote.ask, quote.bid_size or size, quote.ask_size or size, quote.ts_ns
        )

    def top(self, inst: Instrument, now_ns: int | None) -> Quote | None:
        return self._quotes.get(inst.symbol)


class InProcessEngineLink(EngineLink):
    """The ops->engine link of a backtest: commands into the engine core, its report frames back, synchronously.

    It takes :class:`EngineLink`'s constructor arguments (so ``OpsCore`` builds it through ``link_factory``) plus
    the engine core. Commands sent while a signal frame is decided are held until :meth:`pump`, as the real link
    holds them in its queue until the frame's journal records are written.
    """

    def __init__(self, *args: Any, engine: EngineCore, **kwargs: Any) -> None:
        kwargs.setdefault("clock", REAL_CLOCK)
        super().__init__(*args, **kwargs)
        self.session_id = SESSION_ID
        self._engine = engine
        self._outbox: list[engine_pb2.OrderCommand] = []
        self.delivered: list[engine_pb2.ExecutionReport] = []
        """Every report handed to ops since the caller last cleared it (the backtest's fill and reject counts)."""
        self._frames: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue()
        engine.sessions[SESSION_ID] = self._frames

    async def start(self) -> None:
        self.connect()

    async def stop(self) -> None:
        self._engine.sessions.pop(SESSION_ID, None)

    def connect(self) -> None:
        """Learn the venues and instruments (as ``ListVenues`` does), go live, run ops' on-connect."""
        self.learn_venues(engine_wire.venue_infos(self._engine.manager))
        self._connected.set()
        self._quotes_live = True
        self.state_since = self.clock.monotonic()
        if self.on_connected is not None:
            self.on_connected()

    def has_room(self, commands: int) -> bool:
        return self._connected.is_set()

    def send(self, commands: Sequence[engine_pb2.OrderCommand]) -> None:
        self._outbox.extend(commands)

    def pump(self) -> None:
        """Execute the held commands as one frame and hand every report frame to ops, until nothing is left."""
        while True:
            if self._outbox:
                commands, self._outbox = self._outbox, []
                malformed = self._engine.execute(commands, SESSION_ID)
                if malformed:
                    self.delivered.extend(malformed)
                    self.on_reports(malformed)
            if self._frames.empty():
                if not self._outbox:
                    return
                continue
            frame = self._frames.get_nowait()
            if frame:
                self.delivered.extend(frame)
                self.on_reports(frame)

    def publish_quotes(self, venue: str, symbols: Iterable[str]) -> list[common_pb2.Quote]:
        """Give ops the current quotes of ``symbols`` on ``venue`` (marks), as the quote stream sends the quotes that
        changed; returns them."""
        adapter = self._engine.manager.venues[venue]
        quotes = [self._engine.quote_pb(venue, q) for s in symbols if (q := adapter.quote(s)) is not None]
        if quotes:
            self.last_quote_at = self.clock.monotonic()
            self.on_quotes(quotes)
        return quotes

    async def reconcile(self) -> int:
        return 0  # nothing is ever missed in process

    async def cancel_all(self, venue: str = "", model_id: str = "") -> engine_pb2.CancelAllOrdersResponse:
        reports = self._engine.manager.cancel_all(model_id=model_id or None, venue=venue or None)
        self._engine.dispatch(reports)
        self.pump()
        canceled = sum(1 for r in reports if r.exec_type.value == "CANCELED")
        return engine_pb2.CancelAllOrdersResponse(canceled_count=canceled)


def instrument_specs(venues: Sequence[VenueConfig], venue_name: str) -> list[Instrument]:
    """The instruments of venue ``venue_name`` in an engine config's ``venues`` list (the sim defaults if it lists
    none)."""
    spec = next((v for v in venues if v.name == venue_name), None)
    return list(spec.instruments if spec is not None and spec.instruments else default_instruments())


def market_maker(venues: Sequence[VenueConfig], venue_name: str) -> MarketMakerConfig:
    """The market maker settings of venue ``venue_name`` in an engine config's ``venues`` list."""
    spec = next((v for v in venues if v.name == venue_name), None)
    return MarketMakerConfig() if spec is None else spec.market_maker


def notional(quantity: str, price: str) -> Decimal:
    """``quantity * price`` of a report's decimal strings (0 when either is empty)."""
    return Decimal(quantity or "0") * Decimal(price or "0")


__all__ = ["SESSION_ID", "Clock", "InProcessEngineLink", "TapePriceSource", "instrument_specs", "notional"]
