"""The embedded ``sim`` venue: a seeded matching engine with synthetic liquidity."""

from engine_server.venues.sim.book import BookOrder, OrderBook, RestingOrder, fee_for
from engine_server.venues.sim.config import LatencyConfig, MarketMakerConfig, SimVenueConfig, default_instruments
from engine_server.venues.sim.market_maker import (
    FollowPriceSource,
    GbmPriceSource,
    MarketMaker,
    PriceSource,
    ReplayPriceSource,
)
from engine_server.venues.sim.venue import SimVenue

__all__ = [
    "BookOrder",
    "FollowPriceSource",
    "GbmPriceSource",
    "LatencyConfig",
    "MarketMaker",
    "MarketMakerConfig",
    "OrderBook",
    "PriceSource",
    "ReplayPriceSource",
    "RestingOrder",
    "SimVenue",
    "SimVenueConfig",
    "default_instruments",
    "fee_for",
]
