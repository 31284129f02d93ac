"""Venue adapters and the registry the engine builds them from.

The engine's config lists venues in order, each a dict with a ``name`` and an ``adapter`` key naming
a factory in :data:`VENUE_FACTORIES`::

    [{"name": "sim", "adapter": "sim", "seed": 7},
     {"name": "paper", "adapter": "paper", "follows": "sim"}]

A factory gets its dict and a :class:`VenueBuildContext` describing the venues built before it:
their read-only quote feeds, instruments and raw configs (never the adapters themselves, so a
factory cannot wire a shadow venue to a live one). See ``docs/adding-a-venue.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine_server.venues.base import Instrument, QuoteFeed, VenueAdapter
from engine_server.venues.paper import PaperVenue, PaperVenueConfig
from engine_server.venues.sim import MarketMakerConfig, SimVenue, SimVenueConfig
from engine_server.venues.sim.config import LatencyConfig
from nautilus_mesh.errors import ConfigError


@dataclass(frozen=True, slots=True)
class VenueBuildContext:
    """What a venue factory may know about the venues configured before it."""

    quote_feeds: Mapping[str, QuoteFeed] = field(default_factory=dict)
    """Read-only reference quote feeds by venue name."""
    instruments: Mapping[str, Mapping[str, Instrument]] = field(default_factory=dict)
    """Instruments by venue name, then symbol."""
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The raw config dicts by venue name."""
    clock: Callable[[], int] | None = None
    """Wall clock in ns for event timestamps (None: venue time from ``advance``)."""


VenueFactory = Callable[[Mapping[str, Any], VenueBuildContext], VenueAdapter]


def build_sim_venue(config: Mapping[str, Any], ctx: VenueBuildContext) -> SimVenue:
    """Factory of the embedded matching engine (``"adapter": "sim"``)."""
    return SimVenue(SimVenueConfig.from_mapping(config), clock=ctx.clock)


def build_paper_venue(config: Mapping[str, Any], ctx: VenueBuildContext) -> PaperVenue:
    """Factory of a shadow venue (``"adapter": "paper"``, ``"follows": <live venue name>``).

    Instruments and market maker settings default to the followed venue's, so the paper book mirrors it.
    """
    name = str(config.get("name", "paper"))
    follows = str(config.get("follows", "sim"))
    feed = ctx.quote_feeds.get(follows)
    if feed is None:
        raise ConfigError(f"paper venue {name} follows {follows!r}, which is not configured before it or has no feed")
    followed = ctx.configs.get(follows, {})
    raw_instruments = config.get("instruments")
    if raw_instruments is None:
        instruments = tuple(ctx.instruments.get(follows, {}).values())
    elif isinstance(raw_instruments, list):
        instruments = tuple(Instrument.from_mapping(i) for i in raw_instruments if isinstance(i, Mapping))
    else:
        raise ConfigError(f"paper venue {name}: instruments must be a list of objects")
    mm = config.get("market_maker", followed.get("market_maker", {}))
    latency = config.get("latency")
    try:
        seed = int(str(config.get("seed", 0)))
    except ValueError:
        raise ConfigError(f"paper venue {name}: seed must be an integer") from None
    paper_config = PaperVenueConfig(
        name=name,
        follows=follows,
        instruments=instruments,
        seed=seed,
        market_maker=MarketMakerConfig.from_mapping(mm if isinstance(mm, Mapping) else {}),
        latency=LatencyConfig.from_mapping(latency) if isinstance(latency, Mapping) else None,
    )
    return PaperVenue(paper_config, feed.get, clock=ctx.clock)


VENUE_FACTORIES: dict[str, VenueFactory] = {
    "sim": build_sim_venue,
    "paper": build_paper_venue,
}
"""Adapter name -> factory. The template adapter is deliberately not registered."""


def build_venues(
    configs: Sequence[Mapping[str, Any]],
    *,
    clock: Callable[[], int] | None = None,
    factories: Mapping[str, VenueFactory] | None = None,
) -> dict[str, VenueAdapter]:
    """Build venues in config order (a paper venue must come after the venue it follows).

    Raises:
        ConfigError: unknown adapter, duplicate or missing name, or an invalid venue config.
    """
    registry = VENUE_FACTORIES if factories is None else factories
    venues: dict[str, VenueAdapter] = {}
    feeds: dict[str, QuoteFeed] = {}
    instruments: dict[str, Mapping[str, Instrument]] = {}
    raw: dict[str, Mapping[str, Any]] = {}
    for config in configs:
        name = str(config.get("name", ""))
        adapter = str(config.get("adapter", ""))
        if not name:
            raise ConfigError("every venue config needs a name", {"config": config})
        if name in venues:
            raise ConfigError(f"venue {name} is configured twice")
        factory = registry.get(adapter)
        if factory is None:
            raise ConfigError(f"venue {name}: unknown adapter {adapter!r}", {"known": ",".join(sorted(registry))})
        ctx = VenueBuildContext(quote_feeds=dict(feeds), instruments=dict(instruments), configs=dict(raw), clock=clock)
        venue = factory(config, ctx)
        venues[name] = venue
        instruments[name] = venue.instruments()
        raw[name] = config
        feed = venue.quote_feed()
        if feed is not None:
            feeds[name] = feed
    return venues


__all__ = [
    "VENUE_FACTORIES",
    "VenueBuildContext",
    "VenueFactory",
    "build_paper_venue",
    "build_sim_venue",
    "build_venues",
]
