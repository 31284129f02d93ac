"""The ``paper`` venue: shadow trading on the live market's prices with its own book and accounts.

A paper venue builds its own order book per instrument and its own market maker ladder, copied from
the reference quotes a live venue publishes. It is constructed from a :data:`QuoteSource`
(``Callable[[str], Quote | None]``), normally ``live_venue.quote_feed().get``: a function over plain
quote values with no path back to the live adapter. No constructor argument can hold a
``VenueAdapter``, so a shadow order cannot reach a live venue by construction; mypy enforces it.

Fills follow exactly the sim venue's rules (it runs the same matching engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Literal

import pydantic

from engine_server.venues.base import (
    Instrument,
    OrderRequest,
    Quote,
    QuoteFeed,
    QuoteSource,
    VenueAdapter,
    VenueEvent,
    VenueKind,
    VenueStatus,
)
from engine_server.venues.sim.config import LatencyConfig, MarketMakerConfig, SimVenueConfig, VenueName
from engine_server.venues.sim.market_maker import FollowPriceSource
from engine_server.venues.sim.venue import SimVenue
from nautilus_mesh.config import StrictModel


class PaperVenueConfig(StrictModel):
    """A paper venue's settings. Instruments and market maker settings not given are the followed venue's, so the
    paper book mirrors it."""

    adapter: Literal["paper"] = "paper"
    """Selects this adapter in the engine's ``venues`` list."""
    name: VenueName = "paper"
    """Venue name shadow orders address."""
    follows: str = pydantic.Field(default="sim", min_length=1)
    """Name of the live venue whose reference quotes it copies; configured before this one."""
    instruments: tuple[Instrument, ...] = ()
    """Instruments; empty takes the followed venue's."""
    seed: int = 0
    """Seeds the latency jitter (the prices come from the followed venue)."""
    market_maker: MarketMakerConfig = MarketMakerConfig()
    """Ladder depth and spacing around the copied inside quote (``levels``, ``level_step_bps``; default: the followed
    venue's). The inside quote and its sizes are always the followed venue's: ``spread_bps``, ``level_notional`` and
    ``level_size`` here have no effect."""
    latency: LatencyConfig | None = None
    """Optional simulated latency."""

    @pydantic.model_validator(mode="after")
    def _not_itself(self) -> PaperVenueConfig:
        if self.follows == self.name:
            raise ValueError(f"paper venue {self.name} cannot follow itself")
        return self


class PaperVenue(VenueAdapter):
    """Shadow venue: same matching rules and prices as the live venue, separate book and state.

    Args:
        config: Name, instruments, ladder and latency.
        quote_source: Read-only reference quotes of the followed live venue.
        clock: Optional wall clock in ns for submit/cancel event timestamps.
    """

    kind: VenueKind = "paper"

    def __init__(
        self,
        config: PaperVenueConfig,
        quote_source: QuoteSource,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        sim_config = SimVenueConfig(
            name=config.name,
            instruments=config.instruments,
            seed=config.seed,
            market_maker=config.market_maker,
            latency=config.latency,
        )
        # The engine is private: the paper venue exposes only the VenueAdapter calls.
        self._engine = SimVenue(sim_config, clock=clock, price_source=FollowPriceSource(quote_source))

    def instruments(self) -> Mapping[str, Instrument]:
        return self._engine.instruments()

    def submit(self, req: OrderRequest) -> list[VenueEvent]:
        return self._engine.submit(req)

    def cancel(self, client_order_id: str) -> list[VenueEvent]:
        return self._engine.cancel(client_order_id)

    def advance(self, now_ns: int) -> list[VenueEvent]:
        return self._engine.advance(now_ns)

    def quote(self, symbol: str) -> Quote | None:
        return self._engine.quote(symbol)

    def reference_price(self, symbol: str) -> Decimal | None:
        return self._engine.reference_price(symbol)

    def status(self) -> VenueStatus:
        inner = self._engine.status()
        return VenueStatus(
            name=self.name,
            kind=self.kind,
            connected=True,
            instruments=inner.instruments,
            detail=f"paper venue following {self.config.follows}; {inner.detail}",
        )

    def quote_feed(self) -> QuoteFeed:
        return self._engine.quote_feed()
